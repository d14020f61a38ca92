//! Recipient forms that hide a second hop inside an address we would accept (SPEC §3):
//! percent hack, source routes, bang paths, quoted `@`, a second `@`, foreign address
//! literals. From a client that is neither INTERNAL nor authenticated they never relay.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `rcpt` smuggles a route, or `None` when it names one mailbox plainly.
///
/// `rcpt` is the address as the session core stores it (`local@domain`, a quoted local
/// part kept with its quotes, no angle brackets); `had_source_route` says whether the
/// path carried an RFC 5321 §4.1.1.3 source route, which the core strips.
pub fn smuggles_route(rcpt: &str, had_source_route: bool) -> Option<&'static str> {
    if had_source_route {
        return Some("source route (@a,@b:user@c)");
    }
    let (local, domain) = split(rcpt);
    if local.quoted && local.text.contains('@') {
        return Some("quoted local part hiding an @ (\"user@foreign\"@ours)");
    }
    if domain.is_some_and(|d| d.contains('@')) {
        return Some("second @ (user@foreign@ours)");
    }
    if local.text.contains('%') {
        return Some("percent hack (user%foreign@ours)");
    }
    if local.text.contains('!') {
        return Some("bang path (foreign!user@ours)");
    }
    None
}

/// The local part of an address, without its quotes, and whether it was quoted.
struct LocalPart<'a> {
    text: &'a str,
    quoted: bool,
}

/// Splits `rcpt` into its local part and what follows the `@` after it. An unquoted
/// local part ends at the last `@`; a quoted one at its closing quote.
fn split(rcpt: &str) -> (LocalPart<'_>, Option<&str>) {
    if let Some(rest) = rcpt.strip_prefix('"') {
        let bytes = rest.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i = i.saturating_add(2),
                b'"' => {
                    let text = &rest[..i];
                    let after = &rest[i + 1..];
                    return (
                        LocalPart { text, quoted: true },
                        after
                            .strip_prefix('@')
                            .or(Some(after))
                            .filter(|d| !d.is_empty()),
                    );
                }
                _ => i += 1,
            }
        }
        // No closing quote: treat it all as a quoted local part.
        return (
            LocalPart {
                text: rest,
                quoted: true,
            },
            None,
        );
    }
    match rcpt.split_once('@') {
        // The first `@` ends the local part; anything with another `@` is caught by the
        // domain check.
        Some((local, domain)) => (
            LocalPart {
                text: local,
                quoted: false,
            },
            Some(domain),
        ),
        None => (
            LocalPart {
                text: rcpt,
                quoted: false,
            },
            None,
        ),
    }
}

/// The IP address of an address-literal domain (`[192.0.2.1]`, `[IPv6:2001:db8::1]`),
/// `Some(None)` for a literal we cannot read (a general literal), `None` for a name.
pub fn literal_address(domain: &str) -> Option<Option<IpAddr>> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    if let Some(v6) = inner
        .get(..5)
        .filter(|tag| tag.eq_ignore_ascii_case("IPv6:"))
        .map(|_| &inner[5..])
    {
        return Some(v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6));
    }
    Some(inner.parse::<Ipv4Addr>().ok().map(IpAddr::V4))
}

/// Whether `domain` is an address literal that is not one of `ours`.
pub fn is_foreign_literal(domain: &str, ours: &[IpAddr]) -> bool {
    match literal_address(domain) {
        None => false,
        Some(None) => true,
        Some(Some(ip)) => !ours.iter().any(|o| same_ip(*o, ip)),
    }
}

/// IPv4 and its IPv4-mapped IPv6 form are the same address.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_smuggling_form_is_named() {
        let cases: &[(&str, bool, Option<&str>)] = &[
            ("user@example.com", false, None),
            ("first.last+tag@example.com", false, None),
            ("\"first last\"@example.com", false, None),
            ("postmaster", false, None),
            ("user@example.com", true, Some("source route")),
            (
                "user%foreign.example@example.com",
                false,
                Some("percent hack"),
            ),
            ("foreign.example!user@example.com", false, Some("bang path")),
            (
                "\"user@foreign.example\"@example.com",
                false,
                Some("quoted local part"),
            ),
            ("\"user%foreign\"@example.com", false, Some("percent hack")),
            ("user@foreign.example@example.com", false, Some("second @")),
            ("\"a\\\"@b\"@example.com", false, Some("quoted local part")),
            ("\"user\"@x@example.com", false, Some("second @")),
            ("foreign!user", false, Some("bang path")),
        ];
        for (rcpt, route, want) in cases {
            let got = smuggles_route(rcpt, *route);
            match want {
                None => assert_eq!(got, None, "{rcpt}"),
                Some(w) => assert!(got.is_some_and(|g| g.starts_with(w)), "{rcpt}: {got:?}"),
            }
        }
    }

    #[test]
    fn address_literals_are_foreign_unless_ours() {
        let ours: Vec<IpAddr> = vec![
            "192.0.2.25".parse().unwrap(),
            "2001:db8::25".parse().unwrap(),
        ];
        assert!(!is_foreign_literal("example.com", &ours));
        assert!(!is_foreign_literal("[192.0.2.25]", &ours));
        assert!(!is_foreign_literal("[IPv6:2001:db8::25]", &ours));
        assert!(!is_foreign_literal("[ipv6:2001:DB8:0::25]", &ours));
        assert!(is_foreign_literal("[192.0.2.1]", &ours));
        assert!(is_foreign_literal("[IPv6:2001:db8::1]", &ours));
        assert!(is_foreign_literal("[x400:whatever]", &ours));
        assert!(is_foreign_literal("[192.0.2.25]", &[]));
        let mapped: Vec<IpAddr> = vec!["::ffff:192.0.2.25".parse().unwrap()];
        assert!(!is_foreign_literal("[192.0.2.25]", &mapped));
    }

    #[test]
    fn odd_input_never_panics() {
        for rcpt in [
            "",
            "\"",
            "\"\\",
            "\"a\\",
            "@",
            "@@",
            "\"\"@",
            "é%@x",
            "\"é\"@é",
        ] {
            let _ = smuggles_route(rcpt, false);
        }
        for d in ["[", "[]", "[IPv6:]", "[IPv6", "[é]"] {
            assert!(is_foreign_literal(d, &[]) || literal_address(d).is_none());
        }
    }
}
