//! The evaluator: allow rules first, then deny rules, first match wins, no match grants
//! access. Name, forward-confirmation and ident lookups are made lazily, each at most once.

use std::net::IpAddr;

use super::parse::{network_bits, prefix_mask};
use super::{ClientSpec, HostPattern, List, Rule, ServicePattern, ServiceSpec, UserPattern};

/// The outcome of a reverse (PTR) lookup of the client address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameLookup {
    /// The address has this name (trailing dot optional).
    Known(String),
    /// The address has no name (NXDOMAIN or no PTR record).
    Unknown,
    /// The lookup failed (server failure, timeout); the name is unknown for now.
    Failed,
}

/// Answers the evaluator's questions about the client. Each method is called at most once
/// per [`decide`] call, and only when a rule needs the answer, so an implementation may do
/// (or have done) the DNS or ident query it stands for.
pub trait Lookups {
    /// The reverse-DNS name of the client address.
    fn client_name(&mut self) -> NameLookup;
    /// Whether the A/AAAA records of the client's name include the client address:
    /// `Some(true)` confirmed, `Some(false)` not, `None` the forward lookup failed. Asked only
    /// after `client_name` answered `Known`.
    fn forward_confirmed(&mut self) -> Option<bool>;
    /// The RFC 1413 ident user of the connection, when the client's ident server named one.
    fn ident_user(&mut self) -> Option<String>;
}

/// The local end the client connected to, for `service@host` entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerHost<'a> {
    /// The local address the client connected to.
    pub address: IpAddr,
    /// The configured name of that address, when it has one.
    pub name: Option<&'a str>,
}

/// One access request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The service asked for (`smtp`, `submission`); compared without regard to case.
    pub service: &'a str,
    /// The local end the client connected to, when known.
    pub server_host: Option<ServerHost<'a>>,
    /// The client's address.
    pub client_ip: IpAddr,
}

/// The evaluator's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allow rule number `rule` (from 0) matched.
    Allowed {
        /// Index into the allow rules.
        rule: usize,
    },
    /// Deny rule number `rule` (from 0) matched.
    Denied {
        /// Index into the deny rules.
        rule: usize,
    },
    /// No rule matched, which grants access.
    AllowedByDefault,
}

impl Decision {
    /// Whether the client may use the service.
    pub fn is_allowed(self) -> bool {
        !matches!(self, Decision::Denied { .. })
    }
}

/// Decides `request` under `allow` and `deny` (seed 002: "Allow filters are processed before
/// Deny filters, the search terminates when a match is found, and access is granted when no
/// match is found at all").
pub fn decide(
    allow: &[Rule],
    deny: &[Rule],
    request: &Request<'_>,
    lookups: &mut dyn Lookups,
) -> Decision {
    let mut facts = Facts {
        lookups,
        name: None,
        confirmed: None,
        user: None,
    };
    if let Some(rule) = allow
        .iter()
        .position(|r| rule_matches(r, request, &mut facts))
    {
        return Decision::Allowed { rule };
    }
    if let Some(rule) = deny
        .iter()
        .position(|r| rule_matches(r, request, &mut facts))
    {
        return Decision::Denied { rule };
    }
    Decision::AllowedByDefault
}

/// The lookups' answers, each asked for once.
struct Facts<'l> {
    lookups: &'l mut dyn Lookups,
    /// The client name, lower-cased without the trailing dot; `Some(None)` when unknown.
    name: Option<Option<String>>,
    confirmed: Option<Option<bool>>,
    user: Option<Option<String>>,
}

impl Facts<'_> {
    fn name(&mut self) -> Option<&str> {
        let lookups = &mut *self.lookups;
        self.name
            .get_or_insert_with(|| match lookups.client_name() {
                NameLookup::Known(name) => {
                    let name = name.strip_suffix('.').unwrap_or(&name);
                    (!name.is_empty()).then(|| name.to_ascii_lowercase())
                }
                NameLookup::Unknown | NameLookup::Failed => None,
            })
            .as_deref()
    }

    fn spoofed(&mut self) -> bool {
        if self.name().is_none() {
            return false;
        }
        let lookups = &mut *self.lookups;
        *self
            .confirmed
            .get_or_insert_with(|| lookups.forward_confirmed())
            != Some(true)
    }

    fn user(&mut self) -> Option<&str> {
        let lookups = &mut *self.lookups;
        self.user
            .get_or_insert_with(|| lookups.ident_user())
            .as_deref()
    }
}

/// One end of the connection as host patterns see it.
trait Host {
    fn address(&self) -> IpAddr;
    /// The name, lower-cased without its trailing dot, or `None` when unknown.
    fn name(&mut self) -> Option<&str>;
    /// Whether the name does not map back to the address (`DNSSPOOFER`).
    fn spoofed(&mut self) -> bool;
}

struct Client<'f, 'l> {
    address: IpAddr,
    facts: &'f mut Facts<'l>,
}

impl Host for Client<'_, '_> {
    fn address(&self) -> IpAddr {
        self.address
    }
    fn name(&mut self) -> Option<&str> {
        self.facts.name()
    }
    fn spoofed(&mut self) -> bool {
        self.facts.spoofed()
    }
}

struct Server {
    address: IpAddr,
    name: Option<String>,
}

impl Host for Server {
    fn address(&self) -> IpAddr {
        self.address
    }
    fn name(&mut self) -> Option<&str> {
        self.name.as_deref()
    }
    fn spoofed(&mut self) -> bool {
        // Our own configured name is not a DNS answer: it cannot be spoofed.
        false
    }
}

fn rule_matches(rule: &Rule, request: &Request<'_>, facts: &mut Facts<'_>) -> bool {
    list_matches(&rule.services, &mut |spec| service_matches(spec, request))
        && list_matches(&rule.clients, &mut |spec| {
            client_matches(spec, request, facts)
        })
}

/// tcp_wrappers' list_match: any entry matches, and the EXCEPT list does not. Recursion is
/// bounded by `MAX_EXCEPT_DEPTH`.
fn list_matches<T>(list: &List<T>, matches: &mut dyn FnMut(&T) -> bool) -> bool {
    list.entries.iter().any(|entry| matches(entry))
        && !list
            .except
            .as_ref()
            .is_some_and(|except| list_matches(except, matches))
}

fn service_matches(spec: &ServiceSpec, request: &Request<'_>) -> bool {
    let service = match &spec.service {
        ServicePattern::All => true,
        ServicePattern::Name(name) => name.eq_ignore_ascii_case(request.service),
    };
    service
        && match (&spec.server_host, request.server_host) {
            (None, _) => true,
            (Some(pattern), Some(server)) => {
                let name = server.name.map(|n| n.strip_suffix('.').unwrap_or(n));
                let mut server = Server {
                    address: server.address.to_canonical(),
                    name: name.filter(|n| !n.is_empty()).map(str::to_ascii_lowercase),
                };
                host_matches(pattern, &mut server)
            }
            (Some(pattern), None) => *pattern == HostPattern::All,
        }
}

fn client_matches(spec: &ClientSpec, request: &Request<'_>, facts: &mut Facts<'_>) -> bool {
    let mut client = Client {
        address: request.client_ip.to_canonical(),
        facts,
    };
    // The host first: an ident query is the dearest lookup, made only when the host fits.
    if !host_matches(&spec.host, &mut client) {
        return false;
    }
    match &spec.user {
        None | Some(UserPattern::All) => true,
        Some(UserPattern::Known) => facts.user().is_some(),
        Some(UserPattern::Unknown) => facts.user().is_none(),
        Some(UserPattern::Name(name)) => facts.user().is_some_and(|u| u.eq_ignore_ascii_case(name)),
    }
}

fn host_matches(pattern: &HostPattern, host: &mut dyn Host) -> bool {
    match pattern {
        HostPattern::All => true,
        HostPattern::Local => host.name().is_some_and(|name| !name.contains('.')),
        HostPattern::Known => host.name().is_some(),
        HostPattern::Unknown => host.name().is_none(),
        HostPattern::DnsSpoofer => host.spoofed(),
        HostPattern::Name(expected) => host.name() == Some(expected.as_str()),
        HostPattern::DomainSuffix(suffix) => host
            .name()
            .is_some_and(|name| name.ends_with(suffix.as_str())),
        HostPattern::AddressPrefix(prefix) => match host.address() {
            IpAddr::V4(address) => prefix.contains(address),
            IpAddr::V6(_) => false,
        },
        HostPattern::Address(address) => address.to_canonical() == host.address(),
        HostPattern::Masked { network, mask } => match host.address() {
            IpAddr::V4(address) => u32::from(address) & u32::from(*mask) == u32::from(*network),
            IpAddr::V6(_) => false,
        },
        HostPattern::Cidr { network, prefix } => {
            let address = host.address();
            let width = match (network, address) {
                (IpAddr::V4(_), IpAddr::V4(_)) => 32,
                (IpAddr::V6(_), IpAddr::V6(_)) => 128,
                _ => return false,
            };
            let mask = prefix_mask(*prefix, width);
            network_bits(address) & mask == network_bits(*network)
        }
        HostPattern::Netgroup(_) => false,
    }
}
