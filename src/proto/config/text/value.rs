//! Values in the configuration text: durations, sizes, numbers, addresses, names and
//! lists, each parsed from one word into its checked type and printed back canonically.

use super::LineError;
use crate::proto::config::{
    AccessRule, AddressPattern, ChannelKeyword, Cidr, CompactFilter, DomainPattern, EhloKeywords,
    RelayHost,
};
use crate::proto::sasl::{MechanismName, MechanismSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Longest duration accepted anywhere: 365 days. Deadlines are computed as `now + d`, and
/// a bound keeps that sum far from overflowing; no mail timer is longer than a year.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * DAY);

/// RFC 1035 §2.3.4: a label is at most 63 octets.
pub const MAX_LABEL_OCTETS: usize = 63;
/// RFC 1035 §2.3.4: a name is at most 255 octets on the wire, so 253 in text without the
/// trailing dot.
pub const MAX_DOMAIN_OCTETS: usize = 253;

/// Longest category name, in octets. Category names are short identifiers such as
/// INTERNAL; this bounds each classify rule's name to 32 octets.
pub const MAX_CATEGORY_OCTETS: usize = 32;

/// Longest deny text, in octets. RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets
/// with its CRLF; the code (`554 `, 4 octets), an enhanced status code (`5.7.1 `, 6 octets)
/// and the CRLF (2 octets) leave 500.
pub const MAX_DENY_TEXT_OCTETS: usize = 500;

/// Most hosts in one relay or smarthost list: 16, each an address (32 octets in memory) or
/// a name (at most 253 octets).
pub const MAX_RELAY_HOSTS: usize = 16;

/// Most entries in the queue's retry schedule: 20 durations, 16 octets each.
pub const MAX_RETRY_STEPS: usize = 20;

/// The port a relay host gets when its list entry names none: the SMTP port, 25.
pub const DEFAULT_RELAY_PORT: u16 = 25;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// What a duration looks like, for messages.
pub const DURATION_EXPECTED: &str = "a number with a unit s, m, h or d (e.g. 30s)";
/// What a size looks like, for messages.
pub const SIZE_EXPECTED: &str = "a number of bytes, or with a unit k, m or g (e.g. 35m)";
/// What a listen address looks like, for messages.
pub const LISTEN_EXPECTED: &str = "an address and port such as 0.0.0.0:25 or [::]:25";
/// What a DNS resolver address looks like, for messages.
pub const RESOLVER_EXPECTED: &str =
    "an address with an optional port such as 10.1.1.53 or [::1]:53";
/// The DNS port, when a resolver is given without one.
pub const DNS_PORT: u16 = 53;
/// What a relay list looks like, for messages.
pub const HOSTS_EXPECTED: &str =
    "a list of [address]:port or name:port such as [10.1.1.5]:25,smtp.example.com:587";
/// What a next hop's AUTH user name looks like, for messages.
pub const AUTH_USER_EXPECTED: &str =
    "a user name of 1 to 255 visible characters such as relay@example.com";
/// Longest user name we send a next hop: 255 octets, as the SASL mechanisms take
/// (`sasl::MAX_FIELD_LEN`).
pub const MAX_AUTH_USER_OCTETS: usize = crate::proto::sasl::MAX_FIELD_LEN;
/// What a network looks like, for messages.
pub const CIDR_EXPECTED: &str = "an address or a network such as 10.0.0.0/8";
/// What a port looks like, for messages.
pub const PORT_EXPECTED: &str = "a port number from 1 to 65535";
/// What a domain pattern looks like, for messages.
pub const PATTERN_EXPECTED: &str = "a domain pattern: example.com, .example.com or *";
/// What a host name looks like, for messages.
pub const HOST_NAME_EXPECTED: &str = "a host name such as gw.example.com";
/// What a category looks like, for messages.
pub const CATEGORY_EXPECTED: &str =
    "a category name of upper-case letters, digits and _ (e.g. INTERNAL)";
/// What a deny text looks like, for messages.
pub const DENY_EXPECTED: &str = "a quoted reply text such as \"no relaying here\"";
/// What an EHLO keyword list looks like, for messages.
pub const EHLO_EXPECTED: &str =
    "a quoted list of EHLO keywords such as \"PIPELINING SIZE STARTTLS\"";
/// What a retry schedule looks like, for messages.
pub const RETRY_EXPECTED: &str = "a quoted list of 1 to 20 durations such as \"5m 15m 1h\"";

fn invalid(value: &str, problem: impl Into<String>) -> LineError {
    LineError::Value {
        value: value.to_string(),
        problem: problem.into(),
    }
}

/// A decimal number of at most `u64::MAX`; `None` when `text` is not all digits or is too
/// large.
pub fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // All digits, so the only failure left is overflow.
    text.parse().ok()
}

/// A duration: a whole number with a unit `s`, `m`, `h` or `d` (either case).
pub fn duration(text: &str) -> Result<Duration, LineError> {
    let not_duration = || {
        invalid(
            text,
            format!("is not a duration: expected {DURATION_EXPECTED}"),
        )
    };
    let too_long = || {
        invalid(
            text,
            format!("is too long: at most {}", format_duration(MAX_DURATION)),
        )
    };
    let Some(unit) = text.chars().last() else {
        return Err(not_duration());
    };
    let digits = &text[..text.len() - unit.len_utf8()];
    let unit_secs = match unit.to_ascii_lowercase() {
        's' => 1,
        'm' => MINUTE,
        'h' => HOUR,
        'd' => DAY,
        _ => return Err(not_duration()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_duration());
    }
    let secs = number(digits)
        .and_then(|n| n.checked_mul(unit_secs))
        .ok_or_else(too_long)?;
    if secs > MAX_DURATION.as_secs() {
        return Err(too_long());
    }
    Ok(Duration::from_secs(secs))
}

/// A duration in its canonical form: whole seconds in the largest unit that divides them
/// exactly (`300s` prints as `5m`). Fractions of a second cannot be written in the text
/// form and are dropped.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".to_string();
    }
    for (unit, size) in [('d', DAY), ('h', HOUR), ('m', MINUTE)] {
        if secs % size == 0 {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// A size in octets: a whole number, optionally with a unit `k`, `m` or `g` (either case)
/// for KiB, MiB or GiB.
pub fn size(text: &str) -> Result<u64, LineError> {
    let not_size = || invalid(text, format!("is not a size: expected {SIZE_EXPECTED}"));
    let (digits, unit) = match text.chars().last() {
        Some(c) if c.is_ascii_digit() => (text, 1),
        Some(c) => {
            let unit = match c.to_ascii_lowercase() {
                'k' => KIB,
                'm' => MIB,
                'g' => GIB,
                _ => return Err(not_size()),
            };
            (&text[..text.len() - c.len_utf8()], unit)
        }
        None => return Err(not_size()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_size());
    }
    number(digits)
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| invalid(text, "is too large a size"))
}

/// A size in its canonical form: the largest unit that divides it exactly (`36700160`
/// prints as `35m`).
pub fn format_size(octets: u64) -> String {
    if octets != 0 {
        for (unit, size) in [('g', GIB), ('m', MIB), ('k', KIB)] {
            if octets % size == 0 {
                return format!("{}{unit}", octets / size);
            }
        }
    }
    octets.to_string()
}

/// A TCP port, 1 to 65535.
pub fn port(text: &str) -> Result<u16, LineError> {
    match number(text).map(u16::try_from) {
        Some(Ok(p)) if p != 0 => Ok(p),
        _ => Err(invalid(
            text,
            format!("is not a port: expected {PORT_EXPECTED}"),
        )),
    }
}

/// What a TLS version list looks like, for messages.
pub const TLS_VERSIONS_EXPECTED: &str = "\"1.2 1.3\", \"1.2\" or \"1.3\"";
/// What a cipher-suite list looks like, for messages.
pub const CIPHER_SUITES_EXPECTED: &str =
    "cipher suite names separated by blanks, such as \"TLS13_AES_256_GCM_SHA384\"";
/// What a file path looks like, for messages.
pub const PATH_EXPECTED: &str = "an absolute file path such as /etc/drawbridge/ca.pem";
/// What a token label looks like, for messages.
pub const TOKEN_LABEL_EXPECTED: &str =
    "a token label of up to 32 octets without ':' (e.g. drawbridge)";
/// PKCS#11 `CK_TOKEN_INFO.label` holds 32 octets, padded with blanks.
pub const MAX_TOKEN_LABEL: usize = 32;
/// What a channel name looks like, for messages.
pub const CHANNEL_EXPECTED: &str =
    "a channel name of lower-case letters, digits and _ (e.g. tcp_local)";
/// What a channel keyword list looks like, for messages.
pub const KEYWORDS_EXPECTED: &str = "channel keywords such as \"maytls maysaslserver\"";
/// Longest channel name.
pub const MAX_CHANNEL_NAME: usize = 32;
/// Most keywords on one channel.
pub const MAX_CHANNEL_KEYWORDS: usize = 32;
/// Most cipher suites in a list: the provider has fewer.
pub const MAX_CIPHER_SUITES: usize = 32;
/// Longest cipher suite name: 64 characters. The names are rustls's, and the longest of
/// them, `TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256`, has 45.
pub const MAX_CIPHER_SUITE_NAME: usize = 64;
/// Longest path.
pub const MAX_PATH: usize = 1024;

/// `"1.2 1.3"`: which TLS versions are on, at least one.
pub fn tls_versions(text: &str) -> Result<(bool, bool), LineError> {
    let (mut tls12, mut tls13) = (false, false);
    for word in text.split_whitespace() {
        match word {
            "1.2" if !tls12 => tls12 = true,
            "1.3" if !tls13 => tls13 = true,
            _ => {
                return Err(invalid(
                    text,
                    format!(
                        "is not a TLS version list: expected {TLS_VERSIONS_EXPECTED} (TLS 1.0 and 1.1 are not offered)"
                    ),
                ));
            }
        }
    }
    if !tls12 && !tls13 {
        return Err(invalid(
            text,
            format!("names no TLS version: expected {TLS_VERSIONS_EXPECTED}"),
        ));
    }
    Ok((tls12, tls13))
}

pub fn format_tls_versions(tls12: bool, tls13: bool) -> String {
    match (tls12, tls13) {
        (true, true) => "1.2 1.3".into(),
        (true, false) => "1.2".into(),
        _ => "1.3".into(),
    }
}

/// Cipher suite names: upper-case letters, digits and `_`, each once.
pub fn cipher_suites(text: &str) -> Result<Vec<String>, LineError> {
    let mut out: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        let ok = word.len() <= MAX_CIPHER_SUITE_NAME
            && word
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !ok || out.iter().any(|w| w == word) || out.len() == MAX_CIPHER_SUITES {
            return Err(invalid(
                text,
                format!("is not a cipher suite list: expected {CIPHER_SUITES_EXPECTED}"),
            ));
        }
        out.push(word.to_string());
    }
    if out.is_empty() {
        return Err(invalid(
            text,
            format!("names no cipher suite: expected {CIPHER_SUITES_EXPECTED}"),
        ));
    }
    Ok(out)
}

/// An absolute path of printable characters.
pub fn path(text: &str) -> Result<String, LineError> {
    if text.starts_with('/') && text.len() <= MAX_PATH && !text.chars().any(char::is_control) {
        Ok(text.to_string())
    } else {
        Err(invalid(
            text,
            format!("is not a path: expected {PATH_EXPECTED}"),
        ))
    }
}

/// A token label: 1 to [`MAX_TOKEN_LABEL`] octets of printable text without ':' (the PIN
/// file splits `label:PIN` at the first colon) and without blanks at either end (PKCS#11
/// pads labels with blanks).
pub fn token_label(text: &str) -> Result<String, LineError> {
    let ok = !text.is_empty()
        && text.len() <= MAX_TOKEN_LABEL
        && text.trim() == text
        && !text.chars().any(|c| c == ':' || c.is_control());
    if ok {
        Ok(text.to_string())
    } else {
        Err(invalid(
            text,
            format!("is not a token label: expected {TOKEN_LABEL_EXPECTED}"),
        ))
    }
}

/// A channel name: lower-case letters, digits and `_`.
/// What a console login's name may be.
pub const LOGIN_EXPECTED: &str =
    "a login name as login add takes it: 1 to 255 octets, no control characters or '*'";

/// A console login's name, as `login add` takes it.
pub fn login_name(text: &str) -> Result<String, LineError> {
    crate::proto::sasl::users::UserName::parse(text)
        .map(|u| u.as_str().to_string())
        .ok_or_else(|| {
            invalid(
                text,
                format!("is not a login name: expected {LOGIN_EXPECTED}"),
            )
        })
}

pub fn channel_name(text: &str) -> Result<String, LineError> {
    let ok = !text.is_empty()
        && text.len() <= MAX_CHANNEL_NAME
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(text.to_string())
    } else {
        Err(invalid(
            text,
            format!("is not a channel name: expected {CHANNEL_EXPECTED}"),
        ))
    }
}

/// Channel keywords; `tlsswitchchannel` and `saslswitchchannel` take a channel name.
pub fn channel_keywords(text: &str) -> Result<Vec<ChannelKeyword>, LineError> {
    use ChannelKeyword as K;
    let mut out = Vec::new();
    let mut words = text.split_whitespace();
    while let Some(word) = words.next() {
        let simple = [
            K::NoTls,
            K::MayTls,
            K::MustTls,
            K::NoTlsServer,
            K::MayTlsServer,
            K::MustTlsServer,
            K::NoTlsClient,
            K::MayTlsClient,
            K::MustTlsClient,
            K::MaySaslServer,
            K::MustSaslServer,
            K::AllowSwitchChannel,
            K::NoSwitchChannel,
        ];
        let lower = word.to_ascii_lowercase();
        let keyword = match simple.into_iter().find(|k| k.name() == lower) {
            Some(k) => k,
            None if lower == "tlsswitchchannel" || lower == "saslswitchchannel" => {
                let target = words.next().ok_or_else(|| {
                    invalid(
                        text,
                        format!("has '{word}' without a channel name after it"),
                    )
                })?;
                let target = channel_name(target)?;
                if lower == "tlsswitchchannel" {
                    K::TlsSwitchChannel(target)
                } else {
                    K::SaslSwitchChannel(target)
                }
            }
            None => {
                return Err(invalid(
                    text,
                    format!(
                        "has the unknown channel keyword '{word}': expected {KEYWORDS_EXPECTED}"
                    ),
                ));
            }
        };
        if out.len() == MAX_CHANNEL_KEYWORDS {
            return Err(invalid(
                text,
                format!("has more than {MAX_CHANNEL_KEYWORDS} keywords"),
            ));
        }
        out.push(keyword);
    }
    Ok(out)
}

pub fn format_channel_keywords(keywords: &[ChannelKeyword]) -> String {
    keywords
        .iter()
        .map(|k| match k {
            ChannelKeyword::TlsSwitchChannel(to) | ChannelKeyword::SaslSwitchChannel(to) => {
                format!("{} {to}", k.name())
            }
            other => other.name().to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a filter rule looks like, for messages.
pub const FILTER_EXPECTED: &str = "a filter rule such as \"smtp: ALL EXCEPT .example.com\"";
/// What a compact filter looks like, for messages.
pub const COMPACT_FILTER_EXPECTED: &str = "a compact filter such as \"+smtp:LOCAL$-smtp:ALL\"";

/// One filter rule in seed 002's syntax, checked by the filter parser.
pub fn filter_rule(text: &str) -> Result<AccessRule, LineError> {
    AccessRule::parse(text).map_err(|e| {
        invalid(
            text,
            format!("is not a filter rule: {e}; expected {FILTER_EXPECTED}"),
        )
    })
}

/// A compact `+…$-…` filter, checked by the filter parser.
pub fn compact_filter(text: &str) -> Result<CompactFilter, LineError> {
    CompactFilter::parse(text).map_err(|e| {
        invalid(
            text,
            format!("is not a compact filter: {e}; expected {COMPACT_FILTER_EXPECTED}"),
        )
    })
}

/// A DNS resolver: `address`, `address:port` or `[v6]:port`; the port defaults to 53.
pub fn resolver(text: &str) -> Result<SocketAddr, LineError> {
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, DNS_PORT));
    }
    match text.parse::<SocketAddr>() {
        Ok(addr) if addr.port() != 0 => Ok(addr),
        _ => Err(invalid(
            text,
            format!("is not a resolver address: expected {RESOLVER_EXPECTED}"),
        )),
    }
}

/// A listening address: `address:port`, IPv6 in brackets. Port 0 is refused: a listener
/// needs a port that clients can be told.
pub fn listen(text: &str) -> Result<SocketAddr, LineError> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        invalid(
            text,
            format!("is not a listen address: expected {LISTEN_EXPECTED}"),
        )
    })?;
    if addr.port() == 0 {
        return Err(invalid(text, "has port 0: a listener needs a fixed port"));
    }
    Ok(addr)
}

/// One relay host: an address literal `[address]` or `[address]:port`, or a host name
/// `name` or `name:port` (also accepted in brackets, as Postfix writes a name whose MX is
/// not looked up: `[name]:port`; it prints without them). The port defaults to 25.
fn relay_host(text: &str) -> Result<RelayHost, LineError> {
    let bad = || {
        invalid(
            text,
            "is not a relay host: expected [address]:port or name:port (e.g. [10.1.1.5]:25 or smtp.example.com:587)",
        )
    };
    let bare_address = text
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, DEFAULT_RELAY_PORT))
        .or_else(|_| text.parse::<SocketAddr>());
    if let (Ok(a), false) = (bare_address, text.starts_with('[')) {
        return Err(invalid(
            text,
            format!(
                "is not a relay host: write an address in brackets, [{}]:{}",
                a.ip(),
                a.port()
            ),
        ));
    }
    let (host, rest) = match text.strip_prefix('[') {
        Some(t) => t.split_once(']').ok_or_else(bad)?,
        None => text.split_at(text.find(':').unwrap_or(text.len())),
    };
    let port = match rest {
        "" => DEFAULT_RELAY_PORT,
        _ => port(rest.strip_prefix(':').ok_or_else(bad)?)?,
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(RelayHost::Address(SocketAddr::new(ip, port)));
    }
    if host.is_empty() || host.contains(['[', ']', ':']) {
        return Err(bad());
    }
    let name = dns_name(host, "a relay host name")?.to_ascii_lowercase();
    // RFC 3696 §2: a top-level label is never all digits, so this is a mistyped address.
    if name
        .rsplit('.')
        .next()
        .is_some_and(|top| top.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    Ok(RelayHost::Name { name, port })
}

/// A relay or smarthost list: host entries separated by commas, each at most once, at
/// most [`MAX_RELAY_HOSTS`].
pub fn hosts(text: &str) -> Result<Vec<RelayHost>, LineError> {
    let mut out = Vec::new();
    for entry in text.split(',') {
        if entry.is_empty() {
            return Err(invalid(
                text,
                format!("has an empty entry: expected {HOSTS_EXPECTED}"),
            ));
        }
        if out.len() == MAX_RELAY_HOSTS {
            return Err(invalid(
                text,
                format!("has more than {MAX_RELAY_HOSTS} hosts"),
            ));
        }
        let host = relay_host(entry)?;
        if out.contains(&host) {
            return Err(invalid(entry, "is listed twice in one relay list"));
        }
        out.push(host);
    }
    Ok(out)
}

/// A relay list in its canonical form: every entry `[address]:port` or `name:port`.
pub fn format_hosts(hosts: &[RelayHost]) -> String {
    let entries: Vec<String> = hosts.iter().map(ToString::to_string).collect();
    entries.join(",")
}

/// The user a route logs in to its next hop as: visible ASCII without quotes or
/// backslashes (so it is one word in every form it is written in), at most
/// [`MAX_AUTH_USER_OCTETS`].
pub fn auth_user(text: &str) -> Result<String, LineError> {
    let fits = !text.is_empty()
        && text.len() <= MAX_AUTH_USER_OCTETS
        && text
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    if !fits {
        return Err(invalid(
            text,
            format!("is not a user name: expected {AUTH_USER_EXPECTED}"),
        ));
    }
    Ok(text.to_string())
}

/// A network: `address/prefix`, or a bare address for one host (/32 or /128). Host bits
/// are cleared.
pub fn cidr(text: &str) -> Result<Cidr, LineError> {
    let bad = || invalid(text, format!("is not a network: expected {CIDR_EXPECTED}"));
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let longest: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => longest,
        Some(p) => match number(p) {
            Some(n) if n <= u64::from(longest) => n as u8,
            _ => {
                return Err(invalid(
                    text,
                    format!("has a bad prefix length: expected /0 to /{longest}"),
                ));
            }
        },
    };
    Cidr::new(addr, prefix).ok_or_else(bad)
}

/// What an interface name looks like, for messages.
pub const INTERFACE_EXPECTED: &str = "an interface name such as eth0";
/// Linux's `IFNAMSIZ` is 16 with the terminating NUL.
pub const MAX_INTERFACE_NAME: usize = 15;

/// An interface name: 1 to 15 letters, digits, `.`, `-` and `_` (what Linux accepts
/// without quoting trouble).
pub fn interface_name(text: &str) -> Result<String, LineError> {
    if text.is_empty()
        || text.len() > MAX_INTERFACE_NAME
        || !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    {
        return Err(invalid(
            text,
            format!(
                "is not an interface name: expected 1 to {MAX_INTERFACE_NAME} letters, digits, '.', '-' or '_'"
            ),
        ));
    }
    Ok(text.to_string())
}

/// What an interface address looks like, for messages.
pub const INTERFACE_ADDRESS_EXPECTED: &str =
    "an address with its prefix length such as 10.0.2.15/24";

/// An interface address `ADDR/PREFIX`; the host bits are kept.
pub fn interface_address(text: &str) -> Result<crate::proto::config::InterfaceAddress, LineError> {
    let bad = || {
        invalid(
            text,
            format!("is not an interface address: expected {INTERFACE_ADDRESS_EXPECTED}"),
        )
    };
    let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let longest: u8 = if addr.is_ipv4() { 32 } else { 128 };
    match number(prefix) {
        Some(n) if n <= u64::from(longest) => Ok(crate::proto::config::InterfaceAddress {
            addr,
            prefix: n as u8,
        }),
        _ => Err(invalid(
            text,
            format!("has a bad prefix length: expected /0 to /{longest}"),
        )),
    }
}

/// What a gateway address looks like, for messages.
pub const GATEWAY_EXPECTED: &str = "an address such as 10.0.2.2";

/// A gateway address.
pub fn gateway(text: &str) -> Result<IpAddr, LineError> {
    text.parse().map_err(|_| {
        invalid(
            text,
            format!("is not an address: expected {GATEWAY_EXPECTED}"),
        )
    })
}

/// A DNS name of letters, digits and hyphens (RFC 1035 §2.3.1, RFC 1123 §2.1), one
/// trailing dot dropped, case kept.
fn dns_name(text: &str, what: &str) -> Result<String, LineError> {
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.is_empty() {
        return Err(invalid(text, format!("is not {what}: it is empty")));
    }
    if name.len() > MAX_DOMAIN_OCTETS {
        return Err(invalid(
            text,
            format!("is not {what}: longer than {MAX_DOMAIN_OCTETS} octets (RFC 1035 §2.3.4)"),
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(invalid(
                text,
                format!("is not {what}: it has an empty label"),
            ));
        }
        if label.len() > MAX_LABEL_OCTETS {
            return Err(invalid(
                text,
                format!(
                    "is not {what}: label '{label}' is longer than {MAX_LABEL_OCTETS} octets (RFC 1035 §2.3.4)"
                ),
            ));
        }
        let ldh = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ldh || label.starts_with('-') || label.ends_with('-') {
            return Err(invalid(
                text,
                format!(
                    "is not {what}: labels are letters, digits and inner hyphens (RFC 1035 §2.3.1)"
                ),
            ));
        }
    }
    Ok(name.to_string())
}

/// The gateway's host name.
pub fn host_name(text: &str) -> Result<String, LineError> {
    dns_name(text, "a host name")
}

/// A recipient domain pattern: `example.com`, `.example.com` or `*`, lower-cased.
pub fn pattern(text: &str) -> Result<DomainPattern, LineError> {
    if text == "*" {
        return Ok(DomainPattern::Any);
    }
    if let Some(rest) = text.strip_prefix("*.") {
        return Err(invalid(
            text,
            format!("is not a domain pattern: write '.{rest}' for the subdomains of {rest}"),
        ));
    }
    match text.strip_prefix('.') {
        Some(rest) => Ok(DomainPattern::Suffix(
            dns_name(rest, "a domain")?.to_ascii_lowercase(),
        )),
        None => Ok(DomainPattern::Exact(
            dns_name(text, "a domain")?.to_ascii_lowercase(),
        )),
    }
}

/// A classification category: upper-case letters, digits and `_`.
pub fn category(text: &str) -> Result<String, LineError> {
    let fits = |t: &str| {
        t.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    };
    if text.is_empty() || text.len() > MAX_CATEGORY_OCTETS {
        return Err(invalid(
            text,
            format!("is not a category name: expected 1 to {MAX_CATEGORY_OCTETS} characters"),
        ));
    }
    if fits(text) {
        return Ok(text.to_string());
    }
    let upper = text.to_ascii_uppercase();
    if fits(&upper) {
        return Err(invalid(
            text,
            format!("is not a category name: category names are upper case (write '{upper}')"),
        ));
    }
    Err(invalid(
        text,
        format!("is not a category name: expected {CATEGORY_EXPECTED}"),
    ))
}

/// The text of a deny reply: RFC 5321 §4.2 `textstring` (printable ASCII and tab), not
/// empty, at most [`MAX_DENY_TEXT_OCTETS`].
pub fn deny_text(text: &str) -> Result<String, LineError> {
    if text.is_empty() {
        return Err(invalid(text, "is not a deny text: it is empty"));
    }
    if text.len() > MAX_DENY_TEXT_OCTETS {
        return Err(invalid(
            text,
            format!(
                "is too long for a deny text: at most {MAX_DENY_TEXT_OCTETS} octets fit a reply line (RFC 5321 §4.5.3.1.5)"
            ),
        ));
    }
    if !text
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return Err(invalid(
            text,
            "is not a deny text: a reply is printable ASCII (RFC 5321 §4.2 textstring)",
        ));
    }
    Ok(text.to_string())
}

/// A set of EHLO keywords: names from [`EhloKeywords::NAMES`] (any case) separated by
/// blanks, each at most once. An empty list advertises nothing.
pub fn ehlo_keywords(text: &str) -> Result<EhloKeywords, LineError> {
    let mut set = EhloKeywords::NONE;
    for name in text.split_ascii_whitespace() {
        let Some(keyword) = EhloKeywords::from_name(name) else {
            let known: Vec<&str> = EhloKeywords::NAMES.iter().map(|(_, n)| *n).collect();
            return Err(invalid(
                name,
                format!(
                    "is not an EHLO keyword: expected some of {}",
                    known.join(", ")
                ),
            ));
        };
        if set.contains(keyword) {
            return Err(invalid(name, "is listed twice in the EHLO keywords"));
        }
        set = set.with(keyword);
    }
    Ok(set)
}

/// A set of EHLO keywords in its canonical form: the names in advertising order.
pub fn format_ehlo_keywords(set: EhloKeywords) -> String {
    set.names().collect::<Vec<_>>().join(" ")
}

/// A retry schedule: 1 to [`MAX_RETRY_STEPS`] durations, each longer than zero.
pub fn retry(text: &str) -> Result<Vec<Duration>, LineError> {
    let mut steps = Vec::new();
    for step in text.split_ascii_whitespace() {
        if steps.len() == MAX_RETRY_STEPS {
            return Err(invalid(
                text,
                format!("has more than {MAX_RETRY_STEPS} retry steps"),
            ));
        }
        let d = duration(step)?;
        if d.is_zero() {
            return Err(invalid(
                step,
                "is too short for a retry step: expected more than 0s",
            ));
        }
        steps.push(d);
    }
    if steps.is_empty() {
        return Err(invalid(
            text,
            format!("is not a retry schedule: expected {RETRY_EXPECTED}"),
        ));
    }
    Ok(steps)
}

/// A retry schedule in its canonical form.
pub fn format_retry(steps: &[Duration]) -> String {
    steps
        .iter()
        .map(|d| format_duration(*d))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a ruleset name looks like, for messages.
pub const RULESET_EXPECTED: &str =
    "a ruleset name of upper-case letters, digits and _ (e.g. EXTERNAL)";
/// What a mechanism list looks like, for messages.
pub const MECHANISMS_EXPECTED: &str =
    "a quoted list of SASL mechanisms such as \"PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256 EXTERNAL\"";
/// What one mechanism looks like, for messages.
pub const MECHANISM_EXPECTED: &str =
    "a SASL mechanism: PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-256 or EXTERNAL";
/// What a relay rule's channel looks like, for messages.
pub const RULE_CHANNEL_EXPECTED: &str = "a channel name such as tcp_local, or * for any";
/// What an address pattern looks like, for messages.
pub const ADDRESS_PATTERN_EXPECTED: &str =
    "an address pattern with * wildcards such as *@example.com, or * for any";

/// RFC 5321 §4.5.3.1.3: a path is at most 256 octets, so no useful pattern is longer.
/// A relay rule holds two, 512 octets at most.
pub const MAX_ADDRESS_PATTERN_OCTETS: usize = 256;

/// A ruleset name: the same shape as a category name, which it usually equals.
pub fn ruleset_name(text: &str) -> Result<String, LineError> {
    category(text).map_err(|_| {
        let upper = text.to_ascii_uppercase();
        let hint =
            if !text.is_empty() && text.len() <= MAX_CATEGORY_OCTETS && category(&upper).is_ok() {
                format!("ruleset names are upper case (write '{upper}')")
            } else {
                format!("expected {RULESET_EXPECTED}, at most {MAX_CATEGORY_OCTETS} characters")
            };
        invalid(text, format!("is not a ruleset name: {hint}"))
    })
}

/// One SASL mechanism name, any case.
pub fn mechanism(text: &str) -> Result<MechanismName, LineError> {
    MechanismName::parse(text.as_bytes()).ok_or_else(|| {
        invalid(
            text,
            format!("is not a SASL mechanism: expected {MECHANISM_EXPECTED}"),
        )
    })
}

/// A set of SASL mechanisms separated by blanks, each at most once. An empty list offers
/// no AUTH at all.
pub fn mechanisms(text: &str) -> Result<MechanismSet, LineError> {
    let mut set = MechanismSet::EMPTY;
    for word in text.split_whitespace() {
        let m = MechanismName::parse(word.as_bytes()).ok_or_else(|| {
            invalid(
                text,
                format!(
                    "names '{word}', which is not a SASL mechanism: expected {MECHANISM_EXPECTED}"
                ),
            )
        })?;
        if set.contains(m) {
            return Err(invalid(text, format!("names {} twice", m.as_str())));
        }
        set = set.with(m);
    }
    Ok(set)
}

/// A set of mechanisms in canonical order (as EHLO advertises them).
pub fn format_mechanisms(set: MechanismSet) -> String {
    set.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(" ")
}

/// A relay rule's channel: a channel name, or `*` (any: `None`).
pub fn rule_channel(text: &str) -> Result<Option<String>, LineError> {
    if text == "*" {
        return Ok(None);
    }
    channel_name(text).map(Some).map_err(|_| {
        invalid(
            text,
            format!("is not a channel: expected {RULE_CHANNEL_EXPECTED}"),
        )
    })
}

/// An address pattern: printable ASCII without blanks, quotes or backslashes, at most
/// [`MAX_ADDRESS_PATTERN_OCTETS`]; `*` alone is any address (`None`).
pub fn address_pattern(text: &str) -> Result<Option<AddressPattern>, LineError> {
    if text == "*" {
        return Ok(None);
    }
    if text.is_empty() {
        return Err(invalid(
            text,
            format!("is not an address pattern: expected {ADDRESS_PATTERN_EXPECTED}"),
        ));
    }
    if text.len() > MAX_ADDRESS_PATTERN_OCTETS {
        return Err(invalid(
            text,
            format!(
                "is too long for an address pattern: at most {MAX_ADDRESS_PATTERN_OCTETS} octets (RFC 5321 §4.5.3.1.3)"
            ),
        ));
    }
    if !text
        .bytes()
        .all(|b| (b'!'..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        return Err(invalid(
            text,
            format!(
                "is not an address pattern: printable characters without blanks, quotes or backslashes; expected {ADDRESS_PATTERN_EXPECTED}"
            ),
        ));
    }
    Ok(Some(AddressPattern::new(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn problem(e: LineError) -> String {
        e.to_string()
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(duration("30s"), Ok(secs(30)));
        assert_eq!(duration("5m"), Ok(secs(300)));
        assert_eq!(duration("5M"), Ok(secs(300)));
        assert_eq!(duration("2h"), Ok(secs(7200)));
        assert_eq!(duration("5d"), Ok(secs(432_000)));
        assert_eq!(duration("0s"), Ok(secs(0)));
        assert_eq!(duration("007s"), Ok(secs(7)));
        assert_eq!(duration("365d"), Ok(MAX_DURATION));
        for bad in [
            "", "s", "30", "abc", "-5s", "+5s", "5 s", "5x", "1.5h", "5é", "é",
        ] {
            let message = problem(duration(bad).unwrap_err());
            assert!(message.contains("is not a duration"), "{bad:?}: {message}");
        }
        for long in [
            "366d",
            "31536001s",
            "99999999999999999999999s",
            "18446744073709551615d",
        ] {
            let message = problem(duration(long).unwrap_err());
            assert!(
                message.contains("is too long: at most 365d"),
                "{long:?}: {message}"
            );
        }
    }

    #[test]
    fn durations_print_in_the_largest_exact_unit() {
        assert_eq!(format_duration(secs(0)), "0s");
        assert_eq!(format_duration(secs(59)), "59s");
        assert_eq!(format_duration(secs(300)), "5m");
        assert_eq!(format_duration(secs(90)), "90s");
        assert_eq!(format_duration(secs(5400)), "90m");
        assert_eq!(format_duration(secs(7200)), "2h");
        assert_eq!(format_duration(secs(86_400 * 5)), "5d");
        assert_eq!(format_duration(secs(86_400 + 3600)), "25h");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s");
        for s in [
            1,
            59,
            60,
            61,
            3599,
            3600,
            86_399,
            86_400,
            90_000,
            MAX_DURATION.as_secs(),
        ] {
            assert_eq!(duration(&format_duration(secs(s))), Ok(secs(s)), "{s}");
        }
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(size("1024"), Ok(1024));
        assert_eq!(size("35m"), Ok(35 * MIB));
        assert_eq!(size("35M"), Ok(35 * MIB));
        assert_eq!(size("4k"), Ok(4096));
        assert_eq!(size("2G"), Ok(2 * GIB));
        assert_eq!(format_size(35 * MIB), "35m");
        assert_eq!(format_size(1536), "1536");
        assert_eq!(format_size(1025), "1025");
        assert_eq!(format_size(3 * GIB), "3g");
        assert_eq!(format_size(1536 * MIB), "1536m");
        assert_eq!(format_size(0), "0");
        for bad in ["", "m", "1.5m", "5t", "5 m", "-1", "k5"] {
            let message = problem(size(bad).unwrap_err());
            assert!(message.contains("is not a size"), "{bad:?}: {message}");
        }
        assert!(problem(size("18446744073709551615k").unwrap_err()).contains("too large"));
        assert!(problem(size("99999999999999999999999").unwrap_err()).contains("too large"));
        for n in [
            1,
            1023,
            1024,
            1025,
            MIB,
            GIB,
            u64::MAX,
            u64::MAX - u64::MAX % GIB,
        ] {
            assert_eq!(size(&format_size(n)), Ok(n), "{n}");
        }
    }

    #[test]
    fn relay_lists() {
        let sa = |s: &str| RelayHost::Address(s.parse::<SocketAddr>().unwrap());
        let name = |n: &str, port| RelayHost::Name {
            name: n.into(),
            port,
        };
        assert_eq!(
            hosts("[127.0.0.1]:2526,[10.1.1.6]:25,[::1]:25"),
            Ok(vec![
                sa("127.0.0.1:2526"),
                sa("10.1.1.6:25"),
                sa("[::1]:25")
            ])
        );
        assert_eq!(hosts("[10.1.1.6]"), Ok(vec![sa("10.1.1.6:25")]));
        assert_eq!(
            format_hosts(&[sa("10.1.1.6:25"), sa("[::1]:2525")]),
            "[10.1.1.6]:25,[::1]:2525"
        );
        // Host names, alone or mixed with literals; the Postfix form in brackets too.
        assert_eq!(
            hosts("smtp.provider.example:587,[192.0.2.1],Relay-2.Example.COM."),
            Ok(vec![
                name("smtp.provider.example", 587),
                sa("192.0.2.1:25"),
                name("relay-2.example.com", 25)
            ])
        );
        assert_eq!(
            hosts("[smtp.provider.example]:587"),
            Ok(vec![name("smtp.provider.example", 587)])
        );
        assert_eq!(
            format_hosts(&[name("smtp.provider.example", 587), sa("[::1]:25")]),
            "smtp.provider.example:587,[::1]:25"
        );
        for text in [
            "smtp.provider.example:587,[192.0.2.1]:25",
            "[::1]:25,relay:25",
        ] {
            assert_eq!(format_hosts(&hosts(text).unwrap()), text);
        }
        for (bad, part) in [
            ("10.1.1.6:25", "write an address in brackets, [10.1.1.6]:25"),
            ("10.1.1.6", "write an address in brackets, [10.1.1.6]:25"),
            ("::1", "write an address in brackets, [::1]:25"),
            ("[10.1.1.6]:", "is not a port"),
            ("[10.1.1.6]:0", "is not a port"),
            ("[10.1.1.6]:65536", "is not a port"),
            ("smtp.example.com:0", "is not a port"),
            ("smtp.example.com:smtp", "is not a port"),
            ("[10.1.1.6]25", "is not a relay host"),
            ("[10.1.1.6", "is not a relay host"),
            ("10.1.1", "is not a relay host"),
            ("smtp_1.example.com", "is not a relay host name"),
            ("-smtp.example.com", "is not a relay host name"),
            ("[]:25", "is not a relay host"),
            (":25", "is not a relay host"),
            ("[10.1.1.6]:25,", "has an empty entry"),
            ("[10.1.1.6]:25,[10.1.1.6]", "listed twice"),
            ("relay.example:25,RELAY.example", "listed twice"),
            ("", "has an empty entry"),
        ] {
            let message = problem(hosts(bad).unwrap_err());
            assert!(message.contains(part), "{bad:?}: {message}");
        }
        let many: Vec<String> = (1..=17).map(|i| format!("[10.0.0.{i}]")).collect();
        assert!(hosts(&many[..16].join(",")).is_ok());
        assert!(problem(hosts(&many.join(",")).unwrap_err()).contains("more than 16 hosts"));
    }

    #[test]
    fn networks() {
        assert_eq!(cidr("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(cidr("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(cidr("::1").unwrap().to_string(), "::1/128");
        assert_eq!(cidr("::/0").unwrap().to_string(), "::/0");
        assert!(problem(cidr("10.0.0.0/33").unwrap_err()).contains("expected /0 to /32"));
        assert!(problem(cidr("::/129").unwrap_err()).contains("expected /0 to /128"));
        assert!(problem(cidr("10.0.0.0/").unwrap_err()).contains("bad prefix length"));
        assert!(problem(cidr("10.0.0/8").unwrap_err()).contains("is not a network"));
    }

    #[test]
    fn names_and_patterns() {
        assert_eq!(
            host_name("gw.Example.com."),
            Ok("gw.Example.com".to_string())
        );
        assert_eq!(host_name("localhost"), Ok("localhost".to_string()));
        let label = "a".repeat(63);
        assert!(host_name(&format!("{label}.com")).is_ok());
        assert!(problem(host_name(&format!("a{label}.com")).unwrap_err()).contains("63 octets"));
        let long = vec!["abcdefghi"; 26].join(".");
        assert_eq!(long.len(), 259);
        assert!(problem(host_name(&long).unwrap_err()).contains("253 octets"));
        assert!(host_name(&long[..253]).is_ok());
        for bad in [
            "-gw.example.com",
            "gw-.example.com",
            "gw..example.com",
            "gw_1.example",
            ".",
        ] {
            assert!(host_name(bad).is_err(), "{bad}");
        }
        assert_eq!(pattern("*"), Ok(DomainPattern::Any));
        assert_eq!(
            pattern("Example.COM"),
            Ok(DomainPattern::Exact("example.com".into()))
        );
        assert_eq!(
            pattern(".Example.com"),
            Ok(DomainPattern::Suffix("example.com".into()))
        );
        assert!(problem(pattern("*.example.com").unwrap_err()).contains("write '.example.com'"));
        assert!(pattern(".").is_err());
        assert!(pattern("..x").is_err());
    }

    #[test]
    fn categories_and_deny_texts() {
        assert_eq!(category("INTERNAL"), Ok("INTERNAL".to_string()));
        assert_eq!(category("NET_2"), Ok("NET_2".to_string()));
        assert!(problem(category("internal").unwrap_err()).contains("write 'INTERNAL'"));
        assert!(category("IN-TERNAL").is_err());
        assert!(category("").is_err());
        assert!(category(&"A".repeat(33)).is_err());
        assert!(category(&"A".repeat(32)).is_ok());
        assert!(deny_text("no relay\there").is_ok());
        assert!(deny_text("").is_err());
        assert!(problem(deny_text("caf\u{e9}").unwrap_err()).contains("printable ASCII"));
        assert!(deny_text(&"x".repeat(500)).is_ok());
        assert!(problem(deny_text(&"x".repeat(501)).unwrap_err()).contains("at most 500"));
    }

    #[test]
    fn ehlo_keyword_lists() {
        let set = ehlo_keywords("size  pipelining\tSTARTTLS").unwrap();
        assert_eq!(format_ehlo_keywords(set), "PIPELINING SIZE STARTTLS");
        assert_eq!(ehlo_keywords(""), Ok(EhloKeywords::NONE));
        assert_eq!(format_ehlo_keywords(EhloKeywords::NONE), "");
        assert_eq!(
            ehlo_keywords(&format_ehlo_keywords(EhloKeywords::ALL)),
            Ok(EhloKeywords::ALL)
        );
        let message = problem(ehlo_keywords("SIZE XCLIENT").unwrap_err());
        assert!(
            message.starts_with("'XCLIENT' is not an EHLO keyword: expected some of PIPELINING")
        );
        assert!(problem(ehlo_keywords("SIZE size").unwrap_err()).contains("listed twice"));
    }

    #[test]
    fn retry_schedules() {
        assert_eq!(retry(" 5m  1h "), Ok(vec![secs(300), secs(3600)]));
        assert_eq!(format_retry(&[secs(300), secs(3600)]), "5m 1h");
        assert!(problem(retry("").unwrap_err()).contains("is not a retry schedule"));
        assert!(problem(retry("5m 0s").unwrap_err()).contains("'0s' is too short"));
        assert!(problem(retry("5m x").unwrap_err()).contains("'x' is not a duration"));
        assert!(retry(&vec!["1m"; 20].join(" ")).is_ok());
        assert!(problem(retry(&vec!["1m"; 21].join(" ")).unwrap_err()).contains("more than 20"));
    }

    #[test]
    fn ports_and_listen_addresses() {
        assert_eq!(port("25"), Ok(25));
        assert_eq!(port("65535"), Ok(65535));
        for bad in ["0", "65536", "", "x", "-1", "99999999999999999999999"] {
            assert!(
                problem(port(bad).unwrap_err()).contains("is not a port"),
                "{bad}"
            );
        }
        assert_eq!(
            listen("127.0.0.1:2525").unwrap().to_string(),
            "127.0.0.1:2525"
        );
        assert_eq!(listen("[::1]:25").unwrap().to_string(), "[::1]:25");
        assert!(problem(listen("127.0.0.1").unwrap_err()).contains("is not a listen address"));
        assert!(problem(listen("[127.0.0.1]:25").unwrap_err()).contains("is not a listen address"));
        assert!(problem(listen("0.0.0.0:0").unwrap_err()).contains("port 0"));
    }
}
