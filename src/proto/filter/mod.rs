//! Access filters in the syntax of seed 002 ("Filter Syntax"): checked rule trees, their
//! parser, the allow/deny evaluator and the RFC 1413 ident codec that feeds it.
//! **Invariant:** a rule is checked when it is parsed, so the evaluator never meets a
//! malformed one; each lookup is asked lazily and at most once per decision.
//!
//! Nothing here does I/O. The evaluator asks a caller-supplied [`Lookups`] for the client's
//! name, the forward confirmation of that name and the ident user, lazily and at most once
//! each per decision; the async layer answers from the DNS client and an ident query built
//! and parsed by [`ident`].
//!
//! Grammar (tcp_wrappers' hosts_access(5), as the seed describes it):
//!
//! ```text
//! rule         = service-list ":" client-list
//! service-list = list of service-spec      service-spec = service ["@" host-pattern]
//! client-list  = list of client-spec       client-spec  = [user "@"] host-pattern
//! list         = entry { sep entry } [ "EXCEPT" list ]     sep = blanks and/or commas
//! compact      = ("+" | "-") rule { "$" ("+" | "-") rule }
//! ```

mod decide;
#[cfg(test)]
mod fuzz;
pub mod ident;
mod parse;

pub use decide::{Decision, Lookups, NameLookup, Request, ServerHost, decide};
pub use parse::{ParseError, ParseErrorKind};

use std::net::{IpAddr, Ipv4Addr};

/// Longest rule text we parse: 1024 octets, four times a classic 256-octet configuration
/// value, and enough for some fifty address patterns. The checked tree is at most
/// `MAX_ENTRIES` patterns of at most `MAX_NAME` octets, about 16 KiB in the worst case.
pub const MAX_RULE_LEN: usize = 1024;
/// Longest compact (`+…$-…`) filter string: 4096 octets, `MAX_COMPACT_RULES` short rules.
pub const MAX_COMPACT_LEN: usize = 4096;
/// Most rules in one compact filter string: 32.
pub const MAX_COMPACT_RULES: usize = 32;
/// Most entries in one rule, service and client sides together, EXCEPT lists included:
/// 64 entries of at most `MAX_NAME` octets each.
pub const MAX_ENTRIES: usize = 64;
/// Deepest EXCEPT nesting in one list: 8 (`a EXCEPT b EXCEPT …`). Evaluation recurses once
/// per level, so this also bounds the evaluator's stack.
pub const MAX_EXCEPT_DEPTH: usize = 8;
/// Longest host name or domain pattern: 253 octets of text (RFC 1035 §2.3.4: 255 octets in
/// wire form).
pub const MAX_NAME: usize = 253;
/// Longest user name in a pattern or an ident reply: 512 octets (RFC 1413 §5:
/// `<octet-string> ::= 1*512<octet-characters>`).
pub const MAX_USER: usize = 512;

/// One checked filter rule: which services it covers and which clients it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The services (with optional server host) the rule applies to.
    pub services: List<ServiceSpec>,
    /// The clients the rule matches.
    pub clients: List<ClientSpec>,
}

/// A list of entries with an optional EXCEPT list: matches when any entry matches and the
/// EXCEPT list (itself possibly nested) does not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct List<T> {
    /// The entries; never empty.
    pub entries: Vec<T>,
    /// `EXCEPT` list, right-associative: `a EXCEPT b EXCEPT c` is `a EXCEPT (b EXCEPT c)`.
    pub except: Option<Box<List<T>>>,
}

/// One service entry: `service` or `service@host`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// The service name, or every service.
    pub service: ServicePattern,
    /// The local address or name the client connected to, when given.
    pub server_host: Option<HostPattern>,
}

/// A service name pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServicePattern {
    /// `ALL` or `*`.
    All,
    /// A service name, lower-cased (`smtp`, `imap`).
    Name(String),
}

/// One client entry: `host` or `user@host`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSpec {
    /// The RFC 1413 ident user, when given.
    pub user: Option<UserPattern>,
    /// The client host.
    pub host: HostPattern,
}

/// A user pattern (left of `@` in a client entry), matched against the ident answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserPattern {
    /// `ALL` or `*`: any user, no ident query needed.
    All,
    /// `KNOWN`: the ident server named a user.
    Known,
    /// `UNKNOWN`: no user name could be had.
    Unknown,
    /// A user name, compared without regard to ASCII case as tcp_wrappers does.
    Name(String),
}

/// A host pattern, matched against the client (or, after `service@`, the server) end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// `ALL` or `*`.
    All,
    /// `LOCAL`: a host whose name contains no dot.
    Local,
    /// `KNOWN`: a host whose name and address are known.
    Known,
    /// `UNKNOWN`: a host whose name or address is unknown.
    Unknown,
    /// `DNSSPOOFER`: a host whose reverse-DNS name does not map back to its address. A
    /// failed forward lookup counts as not mapping back (tcp_wrappers' PARANOID does the
    /// same); a host without a name presents none to spoof and does not match.
    DnsSpoofer,
    /// A host name, lower-cased, without a trailing dot.
    Name(String),
    /// `.example.com`: any name ending in this suffix; stored lower-cased, dot included.
    DomainSuffix(String),
    /// `192.168.`: an IPv4 address whose leading octets are these.
    AddressPrefix(Ipv4Prefix),
    /// A single address (`192.0.2.1`, `[2001:db8::1]`).
    Address(IpAddr),
    /// `n.n.n.n/m.m.m.m`: an IPv4 network and mask; no address bits outside the mask.
    Masked {
        /// The network address.
        network: Ipv4Addr,
        /// The mask.
        mask: Ipv4Addr,
    },
    /// `192.0.2.0/24`, `[2001:db8::]/32`: a network and a prefix length.
    Cidr {
        /// The network address; no bits set past the prefix.
        network: IpAddr,
        /// The prefix length, at most 32 (IPv4) or 128 (IPv6).
        prefix: u8,
    },
    /// `@name`: an NIS netgroup. The appliance has no NIS directory, so it matches nothing.
    Netgroup(String),
}

/// The leading one to three octets of an IPv4 address (`10.`, `192.168.`, `192.0.2.`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Prefix {
    octets: [u8; 3],
    len: u8,
}

impl Ipv4Prefix {
    /// A prefix of the first `len` octets of `octets`; `None` unless `1 <= len <= 3`.
    pub fn new(octets: [u8; 3], len: usize) -> Option<Ipv4Prefix> {
        if !(1..=3).contains(&len) {
            return None;
        }
        // Octets past the prefix are zeroed so that equal prefixes compare equal.
        let mut kept = [0u8; 3];
        kept[..len].copy_from_slice(&octets[..len]);
        let len = u8::try_from(len).ok()?;
        Some(Ipv4Prefix { octets: kept, len })
    }

    /// The octets of the prefix.
    pub fn octets(&self) -> &[u8] {
        &self.octets[..usize::from(self.len)]
    }

    /// Whether `address` starts with these octets.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        address.octets().starts_with(self.octets())
    }
}

/// Allow and deny rules from one compact filter string (`+imap:ALL$-smtp:*`), in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// The `+` rules, in the order written.
    pub allow: Vec<Rule>,
    /// The `-` rules, in the order written.
    pub deny: Vec<Rule>,
}

impl Rule {
    /// Parses one rule, `service-list: client-list`.
    pub fn parse(text: &str) -> Result<Rule, ParseError> {
        parse::rule(text)
    }
}

impl Filter {
    /// Parses a compact filter string: `+` and `-` rules separated by `$`.
    pub fn parse_compact(text: &str) -> Result<Filter, ParseError> {
        parse::compact(text)
    }

    /// The decision for `request` under these rules.
    pub fn decide(&self, request: &Request<'_>, lookups: &mut dyn Lookups) -> Decision {
        decide(&self.allow, &self.deny, request, lookups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_prefixes() {
        assert_eq!(
            Ipv4Prefix::new([10, 1, 2], 1),
            Ipv4Prefix::new([10, 0, 0], 1)
        );
        assert_eq!(Ipv4Prefix::new([10, 1, 2], 0), None);
        assert_eq!(Ipv4Prefix::new([10, 1, 2], 4), None);
        let prefix = Ipv4Prefix::new([192, 168, 9], 2).unwrap();
        assert_eq!(prefix.octets(), &[192, 168]);
        assert!(prefix.contains(Ipv4Addr::new(192, 168, 200, 1)));
        assert!(!prefix.contains(Ipv4Addr::new(192, 169, 0, 1)));
    }
}
