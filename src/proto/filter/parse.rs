//! Parser from filter text to checked [`Rule`] trees, with positioned errors.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::proto::dns::name::MAX_LABEL;

use super::{
    ClientSpec, Filter, HostPattern, Ipv4Prefix, List, MAX_COMPACT_LEN, MAX_COMPACT_RULES,
    MAX_ENTRIES, MAX_EXCEPT_DEPTH, MAX_NAME, MAX_RULE_LEN, MAX_USER, Rule, ServicePattern,
    ServiceSpec, UserPattern,
};

/// Why filter text was refused, and where: `position` is the octet offset in the text given
/// to the parser (the whole compact string for compact filters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Octet offset of the offending token, or of the end of the text.
    pub position: usize,
    /// What was wrong, or what was expected there.
    pub kind: ParseErrorKind,
}

/// What the parser expected and did not find.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// The text is longer than the limit (`MAX_RULE_LEN` or `MAX_COMPACT_LEN`).
    TooLong,
    /// More than `MAX_ENTRIES` entries in one rule.
    TooManyEntries,
    /// More than `MAX_COMPACT_RULES` rules in one compact string.
    TooManyRules,
    /// More than `MAX_EXCEPT_DEPTH` nested EXCEPT lists.
    TooDeep,
    /// No `:` between the service list and the client list.
    ExpectedColon,
    /// An empty service list.
    ExpectedService,
    /// An empty client list.
    ExpectedClient,
    /// `EXCEPT` with nothing after it (or before it).
    ExpectedListAroundExcept,
    /// A compact rule not starting with `+` or `-`.
    ExpectedSign,
    /// A service name with characters other than letters, digits, `-`, `_`, `.`.
    BadService,
    /// A user name that is empty or too long.
    BadUser,
    /// Something that is neither a host name, an address, nor a pattern.
    BadHost,
    /// A malformed address, address prefix or `[…]` IPv6 address.
    BadAddress,
    /// A malformed `/m.m.m.m` mask or `/n` prefix length.
    BadMask,
    /// A network with address bits set outside its mask or prefix.
    BitsOutsideMask,
}

impl fmt::Display for ParseErrorKind {
    /// What was expected, in words.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseErrorKind::TooLong => write!(f, "shorter filter text"),
            ParseErrorKind::TooManyEntries => write!(f, "at most {MAX_ENTRIES} entries in a rule"),
            ParseErrorKind::TooManyRules => {
                write!(f, "at most {MAX_COMPACT_RULES} rules in a compact filter")
            }
            ParseErrorKind::TooDeep => write!(f, "at most {MAX_EXCEPT_DEPTH} nested EXCEPT lists"),
            ParseErrorKind::ExpectedColon => write!(f, "':' after the service list"),
            ParseErrorKind::ExpectedService => write!(f, "a service name, ALL or *"),
            ParseErrorKind::ExpectedClient => write!(f, "a client pattern"),
            ParseErrorKind::ExpectedListAroundExcept => write!(f, "a list on both sides of EXCEPT"),
            ParseErrorKind::ExpectedSign => write!(f, "'+' (allow) or '-' (deny)"),
            ParseErrorKind::BadService => {
                write!(f, "a service name of letters, digits, '-', '_', '.'")
            }
            ParseErrorKind::BadUser => write!(f, "a user name of 1 to {MAX_USER} octets"),
            ParseErrorKind::BadHost => write!(f, "a host name, address or pattern"),
            ParseErrorKind::BadAddress => write!(f, "an IPv4 or IPv6 address or address prefix"),
            ParseErrorKind::BadMask => write!(f, "a mask n.n.n.n or a prefix length"),
            ParseErrorKind::BitsOutsideMask => write!(f, "a network with no bits outside its mask"),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at octet {}: expected {}", self.position, self.kind)
    }
}

impl std::error::Error for ParseError {}

fn error(position: usize, kind: ParseErrorKind) -> ParseError {
    ParseError { position, kind }
}

/// Parses one rule.
pub(super) fn rule(text: &str) -> Result<Rule, ParseError> {
    if text.len() > MAX_RULE_LEN {
        return Err(error(MAX_RULE_LEN, ParseErrorKind::TooLong));
    }
    rule_at(text, 0)
}

/// Parses a compact filter string.
pub(super) fn compact(text: &str) -> Result<Filter, ParseError> {
    if text.len() > MAX_COMPACT_LEN {
        return Err(error(MAX_COMPACT_LEN, ParseErrorKind::TooLong));
    }
    let mut filter = Filter::default();
    let mut start = 0;
    for piece in text.split('$') {
        let position = start;
        // The piece and its '$' separator: cannot pass text.len() + 1.
        start += piece.len() + 1;
        if filter.allow.len() + filter.deny.len() == MAX_COMPACT_RULES {
            return Err(error(position, ParseErrorKind::TooManyRules));
        }
        // Blanks around '$' are allowed: `+imap:ALL $ -pop:ALL`.
        let blanks = piece.len() - piece.trim_start().len();
        let (position, piece) = (position + blanks, &piece[blanks..]);
        let (sign, body) = match piece.as_bytes().first() {
            Some(b'+') => (true, &piece[1..]),
            Some(b'-') => (false, &piece[1..]),
            _ => return Err(error(position, ParseErrorKind::ExpectedSign)),
        };
        if body.len() > MAX_RULE_LEN {
            return Err(error(position + 1 + MAX_RULE_LEN, ParseErrorKind::TooLong));
        }
        let rule = rule_at(body, position + 1)?;
        if sign {
            filter.allow.push(rule);
        } else {
            filter.deny.push(rule);
        }
    }
    Ok(filter)
}

/// Parses a rule found at octet `base` of the caller's text.
fn rule_at(text: &str, base: usize) -> Result<Rule, ParseError> {
    let colon = colon_outside_brackets(text)
        .ok_or_else(|| error(base + text.len(), ParseErrorKind::ExpectedColon))?;
    let mut entries = 0;
    let service_tokens = tokens(&text[..colon], base);
    let services = list(
        &service_tokens,
        base + colon,
        ParseErrorKind::ExpectedService,
        &mut entries,
        service_spec,
    )?;
    let client_tokens = tokens(&text[colon + 1..], base + colon + 1);
    let clients = list(
        &client_tokens,
        base + text.len(),
        ParseErrorKind::ExpectedClient,
        &mut entries,
        client_spec,
    )?;
    Ok(Rule { services, clients })
}

/// The first `:` not inside `[…]` (IPv6 addresses in the service host are bracketed).
fn colon_outside_brackets(text: &str) -> Option<usize> {
    let mut in_brackets = false;
    for (index, byte) in text.bytes().enumerate() {
        match byte {
            b'[' => in_brackets = true,
            b']' => in_brackets = false,
            b':' if !in_brackets => return Some(index),
            _ => {}
        }
    }
    None
}

/// A token and its octet offset in the caller's text.
#[derive(Clone, Copy)]
struct Token<'a> {
    text: &'a str,
    position: usize,
}

/// Splits at blanks and commas. The text is at most `MAX_RULE_LEN` octets, so the vector is
/// too.
fn tokens(text: &str, base: usize) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut start = None;
    for (index, byte) in text.bytes().enumerate() {
        let separator = byte == b',' || byte.is_ascii_whitespace();
        match (separator, start) {
            (true, Some(s)) => {
                out.push(Token {
                    text: &text[s..index],
                    position: base + s,
                });
                start = None;
            }
            (false, None) => start = Some(index),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(Token {
            text: &text[s..],
            position: base + s,
        });
    }
    out
}

/// Builds a list with its right-associative EXCEPT chain. `end` is where an empty list is
/// reported.
fn list<T>(
    tokens: &[Token<'_>],
    end: usize,
    empty: ParseErrorKind,
    entries: &mut usize,
    entry: fn(Token<'_>) -> Result<T, ParseError>,
) -> Result<List<T>, ParseError> {
    let Some(first) = tokens.first() else {
        return Err(error(end, empty));
    };
    // Segments between EXCEPT keywords, with the EXCEPT token that opened each one.
    let mut segments: Vec<(Option<Token<'_>>, Vec<T>)> = vec![(None, Vec::new())];
    for &token in tokens {
        if token.text.eq_ignore_ascii_case("EXCEPT") {
            if segments.len() > MAX_EXCEPT_DEPTH {
                return Err(error(token.position, ParseErrorKind::TooDeep));
            }
            segments.push((Some(token), Vec::new()));
            continue;
        }
        *entries += 1;
        if *entries > MAX_ENTRIES {
            return Err(error(token.position, ParseErrorKind::TooManyEntries));
        }
        let parsed = entry(token)?;
        if let Some((_, current)) = segments.last_mut() {
            current.push(parsed);
        }
    }
    for (opener, entries) in &segments {
        if entries.is_empty() {
            let position = match opener {
                Some(except) => except.position,
                None => first.position,
            };
            return Err(error(position, ParseErrorKind::ExpectedListAroundExcept));
        }
    }
    let mut built: Option<List<T>> = None;
    while let Some((_, entries)) = segments.pop() {
        built = Some(List {
            entries,
            except: built.map(Box::new),
        });
    }
    // Invariant: `segments` started with one element, so the loop ran at least once.
    built.ok_or_else(|| error(end, empty))
}

fn service_spec(token: Token<'_>) -> Result<ServiceSpec, ParseError> {
    let (name, host) = match token.text.split_once('@') {
        Some((name, host)) => (name, Some(host)),
        None => (token.text, None),
    };
    let service = if is_all(name) {
        ServicePattern::All
    } else if !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        ServicePattern::Name(name.to_ascii_lowercase())
    } else {
        return Err(error(token.position, ParseErrorKind::BadService));
    };
    let server_host = match host {
        Some(host) => {
            // The host part starts after the service name and the '@'.
            let position = token.position + name.len() + 1;
            Some(host_pattern(Token {
                text: host,
                position,
            })?)
        }
        None => None,
    };
    Ok(ServiceSpec {
        service,
        server_host,
    })
}

fn client_spec(token: Token<'_>) -> Result<ClientSpec, ParseError> {
    // A leading '@' is a netgroup (or the seed's `@.domain`), not an empty user.
    match token.text.get(1..).and_then(|rest| rest.find('@')) {
        Some(at) => {
            let at = at + 1;
            let user = user_pattern(Token {
                text: &token.text[..at],
                position: token.position,
            })?;
            let host = host_pattern(Token {
                text: &token.text[at + 1..],
                position: token.position + at + 1,
            })?;
            Ok(ClientSpec {
                user: Some(user),
                host,
            })
        }
        None => Ok(ClientSpec {
            user: None,
            host: host_pattern(token)?,
        }),
    }
}

fn user_pattern(token: Token<'_>) -> Result<UserPattern, ParseError> {
    let text = token.text;
    Ok(if is_all(text) {
        UserPattern::All
    } else if text.eq_ignore_ascii_case("KNOWN") {
        UserPattern::Known
    } else if text.eq_ignore_ascii_case("UNKNOWN") {
        UserPattern::Unknown
    } else if !text.is_empty() && text.len() <= MAX_USER {
        UserPattern::Name(text.to_string())
    } else {
        return Err(error(token.position, ParseErrorKind::BadUser));
    })
}

fn is_all(text: &str) -> bool {
    text == "*" || text.eq_ignore_ascii_case("ALL")
}

fn host_pattern(token: Token<'_>) -> Result<HostPattern, ParseError> {
    let text = token.text;
    let bad = |kind| Err(error(token.position, kind));
    if text.is_empty() {
        return bad(ParseErrorKind::BadHost);
    }
    if is_all(text) {
        return Ok(HostPattern::All);
    }
    for (keyword, pattern) in [
        ("LOCAL", HostPattern::Local),
        ("KNOWN", HostPattern::Known),
        ("UNKNOWN", HostPattern::Unknown),
        ("DNSSPOOFER", HostPattern::DnsSpoofer),
    ] {
        if text.eq_ignore_ascii_case(keyword) {
            return Ok(pattern);
        }
    }
    if let Some(group) = text.strip_prefix('@') {
        // Seed 002's virtual-domain example writes `@.siroe1.com` for "hosts within
        // siroe1.com"; a netgroup name never starts with a dot, so the two cannot clash.
        if group.starts_with('.') {
            return domain_suffix(group).map_or(bad(ParseErrorKind::BadHost), Ok);
        }
        return match host_name(group) {
            Some(name) => Ok(HostPattern::Netgroup(name)),
            None => bad(ParseErrorKind::BadHost),
        };
    }
    if let Some(rest) = text.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return bad(ParseErrorKind::BadAddress);
        };
        let Ok(address) = inside.parse::<Ipv6Addr>() else {
            return bad(ParseErrorKind::BadAddress);
        };
        if after.is_empty() {
            return Ok(HostPattern::Address(IpAddr::V6(address)));
        }
        let Some(length) = after.strip_prefix('/') else {
            return bad(ParseErrorKind::BadAddress);
        };
        return cidr(IpAddr::V6(address), length, token.position);
    }
    if let Some((network, mask)) = text.split_once('/') {
        let Ok(network) = network.parse::<IpAddr>() else {
            return bad(ParseErrorKind::BadAddress);
        };
        return match (network, mask.parse::<Ipv4Addr>()) {
            (IpAddr::V4(network), Ok(mask)) => {
                if u32::from(network) & !u32::from(mask) != 0 {
                    return bad(ParseErrorKind::BitsOutsideMask);
                }
                Ok(HostPattern::Masked { network, mask })
            }
            _ => cidr(network, mask, token.position),
        };
    }
    if text.starts_with('.') {
        return domain_suffix(text).map_or(bad(ParseErrorKind::BadHost), Ok);
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        if let Some(prefix) = text.strip_suffix('.') {
            return address_prefix(prefix).map_or(bad(ParseErrorKind::BadAddress), Ok);
        }
        return match text.parse::<Ipv4Addr>() {
            Ok(address) => Ok(HostPattern::Address(IpAddr::V4(address))),
            Err(_) => bad(ParseErrorKind::BadAddress),
        };
    }
    if text.contains(':') {
        return match text.parse::<Ipv6Addr>() {
            Ok(address) => Ok(HostPattern::Address(IpAddr::V6(address))),
            Err(_) => bad(ParseErrorKind::BadAddress),
        };
    }
    match host_name(text) {
        Some(name) => Ok(HostPattern::Name(name)),
        None => bad(ParseErrorKind::BadHost),
    }
}

fn cidr(network: IpAddr, length: &str, position: usize) -> Result<HostPattern, ParseError> {
    let limit = match network {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let prefix = match length.parse::<u8>() {
        Ok(prefix) if prefix <= limit && length.bytes().all(|b| b.is_ascii_digit()) => prefix,
        _ => return Err(error(position, ParseErrorKind::BadMask)),
    };
    if network_bits(network) & !prefix_mask(prefix, limit) != 0 {
        return Err(error(position, ParseErrorKind::BitsOutsideMask));
    }
    Ok(HostPattern::Cidr { network, prefix })
}

/// An address as a 128-bit number, IPv4 in the low 32 bits.
pub(super) fn network_bits(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The mask of a `prefix`-bit network in a `width`-bit address, as a 128-bit number.
pub(super) fn prefix_mask(prefix: u8, width: u8) -> u128 {
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    // prefix <= width <= 128, so the shift is at most 128 and checked_shl covers 128.
    let host_bits = u32::from(width - prefix.min(width));
    let host = 1u128
        .checked_shl(host_bits)
        .map_or(u128::MAX, |bit| bit - 1);
    all & !host
}

fn address_prefix(text: &str) -> Option<HostPattern> {
    /// An octet in decimal: at most 3 digits (255).
    const MAX_OCTET_DIGITS: usize = 3;
    let mut octets = [0u8; 3];
    let mut len = 0;
    for part in text.split('.') {
        if len == 3 || part.is_empty() || part.len() > MAX_OCTET_DIGITS {
            return None;
        }
        octets[len] = part.parse().ok()?;
        len += 1;
    }
    Ipv4Prefix::new(octets, len).map(HostPattern::AddressPrefix)
}

fn domain_suffix(text: &str) -> Option<HostPattern> {
    let name = host_name(&text[1..])?;
    Some(HostPattern::DomainSuffix(format!(".{name}")))
}

/// A host name lower-cased without its trailing dot, if it is one: labels of letters,
/// digits, `-` and `_`, at most `MAX_NAME` octets.
fn host_name(text: &str) -> Option<String> {
    let text = text.strip_suffix('.').unwrap_or(text);
    let valid = !text.is_empty()
        && text.len() <= MAX_NAME
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then(|| text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(text: &str) -> HostPattern {
        let rule = rule(&format!("ALL: {text}")).unwrap();
        assert_eq!(rule.clients.entries.len(), 1);
        rule.clients.entries[0].host.clone()
    }

    #[test]
    fn patterns() {
        let v4 = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases: Vec<(&str, HostPattern)> = vec![
            ("ALL", HostPattern::All),
            ("*", HostPattern::All),
            ("all", HostPattern::All),
            ("LOCAL", HostPattern::Local),
            ("KNOWN", HostPattern::Known),
            ("UNKNOWN", HostPattern::Unknown),
            ("DNSSPOOFER", HostPattern::DnsSpoofer),
            (
                "Mail.Example.COM",
                HostPattern::Name("mail.example.com".into()),
            ),
            (
                "mail.example.com.",
                HostPattern::Name("mail.example.com".into()),
            ),
            (
                ".Example.com",
                HostPattern::DomainSuffix(".example.com".into()),
            ),
            (
                "@.siroe1.com",
                HostPattern::DomainSuffix(".siroe1.com".into()),
            ),
            ("@netgroup1", HostPattern::Netgroup("netgroup1".into())),
            (
                "192.168.",
                HostPattern::AddressPrefix(Ipv4Prefix::new([192, 168, 0], 2).unwrap()),
            ),
            (
                "10.",
                HostPattern::AddressPrefix(Ipv4Prefix::new([10, 0, 0], 1).unwrap()),
            ),
            ("192.0.2.7", HostPattern::Address(ip("192.0.2.7"))),
            ("[2001:db8::1]", HostPattern::Address(ip("2001:db8::1"))),
            ("2001:db8::1", HostPattern::Address(ip("2001:db8::1"))),
            (
                "192.0.2.0/255.255.255.0",
                HostPattern::Masked {
                    network: v4("192.0.2.0"),
                    mask: v4("255.255.255.0"),
                },
            ),
            (
                "192.0.2.0/24",
                HostPattern::Cidr {
                    network: ip("192.0.2.0"),
                    prefix: 24,
                },
            ),
            (
                "0.0.0.0/0",
                HostPattern::Cidr {
                    network: ip("0.0.0.0"),
                    prefix: 0,
                },
            ),
            (
                "[2001:db8::]/32",
                HostPattern::Cidr {
                    network: ip("2001:db8::"),
                    prefix: 32,
                },
            ),
            (
                "[::1]/128",
                HostPattern::Cidr {
                    network: ip("::1"),
                    prefix: 128,
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(host(text), expected, "{text}");
        }
    }

    #[test]
    fn users_services_and_lists() {
        let rule =
            rule("pop@mailServer1.siroe.com, imap: srashad@xyz.europe.siroe.com ALL@x").unwrap();
        assert_eq!(
            rule.services.entries,
            vec![
                ServiceSpec {
                    service: ServicePattern::Name("pop".into()),
                    server_host: Some(HostPattern::Name("mailserver1.siroe.com".into())),
                },
                ServiceSpec {
                    service: ServicePattern::Name("imap".into()),
                    server_host: None
                },
            ]
        );
        assert_eq!(
            rule.clients.entries,
            vec![
                ClientSpec {
                    user: Some(UserPattern::Name("srashad".into())),
                    host: HostPattern::Name("xyz.europe.siroe.com".into()),
                },
                ClientSpec {
                    user: Some(UserPattern::All),
                    host: HostPattern::Name("x".into())
                },
            ]
        );
        let user = |text: &str| super::rule(text).unwrap().clients.entries[0].user.clone();
        assert_eq!(user("a: KNOWN@x"), Some(UserPattern::Known));
        assert_eq!(user("a: unknown@x"), Some(UserPattern::Unknown));
        assert_eq!(user("a: bob@@ng"), Some(UserPattern::Name("bob".into())));
        let server = super::rule("ALL@[::1]: ALL").unwrap().services.entries[0].clone();
        assert_eq!(
            server.server_host,
            Some(HostPattern::Address("::1".parse().unwrap()))
        );
    }

    #[test]
    fn except_is_right_associative() {
        let rule = rule("ALL EXCEPT pop: a b EXCEPT c EXCEPT d,e").unwrap();
        let services_except = rule.services.except.as_ref().unwrap();
        assert_eq!(
            services_except.entries[0].service,
            ServicePattern::Name("pop".into())
        );
        let names = |list: &List<ClientSpec>| {
            list.entries
                .iter()
                .map(|c| c.host.clone())
                .collect::<Vec<_>>()
        };
        let name = |s: &str| HostPattern::Name(s.into());
        assert_eq!(names(&rule.clients), vec![name("a"), name("b")]);
        let inner = rule.clients.except.as_ref().unwrap();
        assert_eq!(names(inner), vec![name("c")]);
        let innermost = inner.except.as_ref().unwrap();
        assert_eq!(names(innermost), vec![name("d"), name("e")]);
        assert!(innermost.except.is_none());
    }

    #[test]
    fn compact_form() {
        let filter = compact("+imap:ALL$+pop:ALL$-http:*").unwrap();
        assert_eq!(filter.allow.len(), 2);
        assert_eq!(filter.deny.len(), 1);
        let spaced = compact(" +imap:ALL $ -pop:10. ").unwrap();
        assert_eq!(spaced, compact("+imap:ALL$-pop:10.").unwrap());
        let filter = compact("+imap,pop,http:*").unwrap();
        assert_eq!(filter.allow[0].services.entries.len(), 3);
        assert!(filter.deny.is_empty());
    }

    #[test]
    fn errors() {
        use ParseErrorKind::*;
        let long = format!("ALL: {}", "a ".repeat(600));
        let many = format!("ALL: {}", "a ".repeat(64));
        let deep = format!("ALL: a{}", " EXCEPT a".repeat(9));
        let cases: Vec<(&str, usize, ParseErrorKind)> = vec![
            ("", 0, ExpectedColon),
            ("imap ALL", 8, ExpectedColon),
            (": ALL", 0, ExpectedService),
            ("imap:", 5, ExpectedClient),
            ("imap:  ,, ", 10, ExpectedClient),
            ("imap: ALL EXCEPT", 10, ExpectedListAroundExcept),
            ("imap: EXCEPT a", 6, ExpectedListAroundExcept),
            ("imap: a EXCEPT EXCEPT b", 8, ExpectedListAroundExcept),
            ("EXCEPT: a", 0, ExpectedListAroundExcept),
            ("im/ap: ALL", 0, BadService),
            ("@host: ALL", 0, BadService),
            ("imap@: ALL", 5, BadHost),
            ("imap: a!b", 6, BadHost),
            ("imap: x@a..b", 8, BadHost),
            ("imap: @", 6, BadHost),
            ("imap: @.", 6, BadHost),
            ("imap: .", 6, BadHost),
            ("imap: 300.1.1.1", 6, BadAddress),
            ("imap: 1.2.3.4.", 6, BadAddress),
            ("imap: 1..", 6, BadAddress),
            ("imap: [::1", 6, BadAddress),
            ("imap: [::1]x", 6, BadAddress),
            ("imap: [1.2.3.4]", 6, BadAddress),
            ("imap: gg::1", 6, BadAddress),
            ("imap: host/24", 6, BadAddress),
            ("imap: 10.0.0.0/33", 6, BadMask),
            ("imap: 10.0.0.0/+8", 6, BadMask),
            ("imap: [::]/129", 6, BadMask),
            ("imap: 10.0.0.1/8", 6, BitsOutsideMask),
            ("imap: 10.0.0.1/255.0.0.0", 6, BitsOutsideMask),
            ("imap: [2001:db8::1]/32", 6, BitsOutsideMask),
            (&long, MAX_RULE_LEN, TooLong),
            (&many, 5 + 2 * 63, TooManyEntries),
            (&deep, 5 + 1 + 9 * 8 + 1, TooDeep),
        ];
        for (text, position, kind) in cases {
            assert_eq!(rule(text), Err(ParseError { position, kind }), "{text:?}");
        }
        let compact_cases: Vec<(&str, usize, ParseErrorKind)> = vec![
            ("", 0, ExpectedSign),
            ("imap:ALL", 0, ExpectedSign),
            ("+imap:ALL$", 10, ExpectedSign),
            ("+imap:ALL$$-pop:ALL", 10, ExpectedSign),
            ("+imap:ALL$-pop", 14, ExpectedColon),
            ("+imap:ALL$-pop:a!", 15, BadHost),
            ("+imap:ALL$ ", 11, ExpectedSign),
            ("+imap:ALL$  x", 12, ExpectedSign),
        ];
        for (text, position, kind) in compact_cases {
            assert_eq!(
                compact(text),
                Err(ParseError { position, kind }),
                "{text:?}"
            );
        }
        let rules = vec!["+a:b"; MAX_COMPACT_RULES + 1].join("$");
        assert_eq!(
            compact(&rules),
            Err(ParseError {
                position: 5 * MAX_COMPACT_RULES,
                kind: TooManyRules
            })
        );
        let message = rule("imap ALL").unwrap_err().to_string();
        assert_eq!(message, "at octet 8: expected ':' after the service list");
        let message = rule(&many).unwrap_err().to_string();
        assert_eq!(
            message,
            "at octet 131: expected at most 64 entries in a rule"
        );
    }
}
