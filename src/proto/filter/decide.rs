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
    /// Whether the name matches `pattern` and maps back to the address: how name
    /// patterns, `LOCAL` and `KNOWN` match. Whoever controls an address's PTR record can
    /// give it any name; a name whose own addresses do not include the address (or that
    /// could not be checked) matches `DNSSPOOFER` only, as tcp_wrappers matches it only
    /// by PARANOID. The name is compared first, so a name that does not match costs no
    /// forward lookup.
    fn verified_name_is(&mut self, pattern: &dyn Fn(&str) -> bool) -> bool {
        self.name().is_some_and(pattern) && !self.spoofed()
    }
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
    list.entries.iter().any(&mut *matches)
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
        HostPattern::Local => host.verified_name_is(&|name| !name.contains('.')),
        HostPattern::Known => host.verified_name_is(&|_| true),
        HostPattern::Unknown => host.name().is_none(),
        HostPattern::DnsSpoofer => host.spoofed(),
        HostPattern::Name(expected) => host.verified_name_is(&|name| name == expected),
        HostPattern::DomainSuffix(suffix) => {
            host.verified_name_is(&|name| name.ends_with(suffix.as_str()))
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::filter::Filter;

    /// Canned answers that count how often each is asked for.
    #[derive(Clone, Debug)]
    struct Fake {
        name: NameLookup,
        confirmed: Option<bool>,
        user: Option<String>,
        calls: [usize; 3],
    }

    impl Fake {
        fn named(name: &str) -> Fake {
            Fake {
                name: NameLookup::Known(name.into()),
                confirmed: Some(true),
                user: None,
                calls: [0; 3],
            }
        }
        fn nameless(lookup: NameLookup) -> Fake {
            Fake {
                name: lookup,
                ..Fake::named("")
            }
        }
        fn user(mut self, user: &str) -> Fake {
            self.user = Some(user.into());
            self
        }
        fn confirmed(mut self, confirmed: Option<bool>) -> Fake {
            self.confirmed = confirmed;
            self
        }
    }

    impl Lookups for Fake {
        fn client_name(&mut self) -> NameLookup {
            self.calls[0] += 1;
            self.name.clone()
        }
        fn forward_confirmed(&mut self) -> Option<bool> {
            self.calls[1] += 1;
            self.confirmed
        }
        fn ident_user(&mut self) -> Option<String> {
            self.calls[2] += 1;
            self.user.clone()
        }
    }

    fn rules(texts: &[&str]) -> Vec<Rule> {
        texts.iter().map(|t| Rule::parse(t).unwrap()).collect()
    }

    fn request<'a>(service: &'a str, client: &str) -> Request<'a> {
        Request {
            service,
            server_host: None,
            client_ip: client.parse().unwrap(),
        }
    }

    /// Decides and checks that no lookup was asked for twice.
    fn run(allow: &[&str], deny: &[&str], request: &Request<'_>, fake: &mut Fake) -> Decision {
        let decision = decide(&rules(allow), &rules(deny), request, fake);
        assert!(
            fake.calls.iter().all(|&n| n <= 1),
            "repeated lookup: {:?}",
            fake.calls
        );
        decision
    }

    /// One allow rule; `true` when it matched.
    fn allows(rule: &str, request: &Request<'_>, fake: &mut Fake) -> bool {
        match run(&[rule], &[], request, fake) {
            Decision::Allowed { rule: 0 } => true,
            Decision::AllowedByDefault => false,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_construct() {
        let named = Fake::named;
        let unknown = || Fake::nameless(NameLookup::Unknown);
        let failed = || Fake::nameless(NameLookup::Failed);
        // (rule, service, client address, lookups, matches)
        let cases: Vec<(&str, &str, &str, Fake, bool)> = vec![
            ("ALL: ALL", "smtp", "192.0.2.1", unknown(), true),
            ("*: *", "smtp", "192.0.2.1", unknown(), true),
            ("smtp: ALL", "SMTP", "192.0.2.1", unknown(), true),
            ("smtp: ALL", "imap", "192.0.2.1", unknown(), false),
            ("imap, smtp: ALL", "smtp", "192.0.2.1", unknown(), true),
            // LOCAL: a name without a dot.
            ("ALL: LOCAL", "smtp", "192.0.2.1", named("printer"), true),
            ("ALL: LOCAL", "smtp", "192.0.2.1", named("printer."), true),
            (
                "ALL: LOCAL",
                "smtp",
                "192.0.2.1",
                named("printer.example.com"),
                false,
            ),
            ("ALL: LOCAL", "smtp", "192.0.2.1", unknown(), false),
            // KNOWN / UNKNOWN hosts.
            (
                "ALL: KNOWN",
                "smtp",
                "192.0.2.1",
                named("a.example.com"),
                true,
            ),
            ("ALL: KNOWN", "smtp", "192.0.2.1", unknown(), false),
            ("ALL: KNOWN", "smtp", "192.0.2.1", failed(), false),
            ("ALL: UNKNOWN", "smtp", "192.0.2.1", unknown(), true),
            ("ALL: UNKNOWN", "smtp", "192.0.2.1", failed(), true),
            (
                "ALL: UNKNOWN",
                "smtp",
                "192.0.2.1",
                named("a.example.com"),
                false,
            ),
            // DNSSPOOFER: the name does not lead back to the address.
            (
                "ALL: DNSSPOOFER",
                "smtp",
                "192.0.2.1",
                named("a.b").confirmed(Some(false)),
                true,
            ),
            (
                "ALL: DNSSPOOFER",
                "smtp",
                "192.0.2.1",
                named("a.b").confirmed(None),
                true,
            ),
            (
                "ALL: DNSSPOOFER",
                "smtp",
                "192.0.2.1",
                named("a.b").confirmed(Some(true)),
                false,
            ),
            ("ALL: DNSSPOOFER", "smtp", "192.0.2.1", unknown(), false),
            // Names, without regard to case.
            (
                "ALL: mail.example.com",
                "smtp",
                "192.0.2.1",
                named("MAIL.Example.com."),
                true,
            ),
            (
                "ALL: mail.example.com",
                "smtp",
                "192.0.2.1",
                named("mail.example.org"),
                false,
            ),
            (
                "ALL: mail.example.com",
                "smtp",
                "192.0.2.1",
                failed(),
                false,
            ),
            // Leading-dot domains match names inside the domain, not the domain itself.
            (
                "ALL: .example.com",
                "smtp",
                "192.0.2.1",
                named("a.b.Example.COM"),
                true,
            ),
            (
                "ALL: .example.com",
                "smtp",
                "192.0.2.1",
                named("example.com"),
                false,
            ),
            (
                "ALL: .example.com",
                "smtp",
                "192.0.2.1",
                named("badexample.com"),
                false,
            ),
            // Trailing-dot address prefixes, whole octets only.
            ("ALL: 192.168.", "smtp", "192.168.7.9", unknown(), true),
            ("ALL: 192.168.", "smtp", "192.169.7.9", unknown(), false),
            ("ALL: 192.1.", "smtp", "192.168.7.9", unknown(), false),
            (
                "ALL: 192.168.",
                "smtp",
                "::ffff:192.168.7.9",
                unknown(),
                true,
            ),
            ("ALL: 192.168.", "smtp", "2001:db8::1", unknown(), false),
            // Single addresses.
            ("ALL: 192.0.2.1", "smtp", "192.0.2.1", unknown(), true),
            ("ALL: 192.0.2.1", "smtp", "192.0.2.2", unknown(), false),
            ("ALL: [2001:db8::1]", "smtp", "2001:db8::1", unknown(), true),
            (
                "ALL: [2001:DB8::1]",
                "smtp",
                "2001:db8::2",
                unknown(),
                false,
            ),
            // n.n.n.n/m.m.m.m masks.
            (
                "ALL: 10.1.0.0/255.255.0.0",
                "smtp",
                "10.1.200.3",
                unknown(),
                true,
            ),
            (
                "ALL: 10.1.0.0/255.255.0.0",
                "smtp",
                "10.2.0.3",
                unknown(),
                false,
            ),
            (
                "ALL: 10.1.0.0/255.255.0.0",
                "smtp",
                "2001:db8::1",
                unknown(),
                false,
            ),
            // CIDR, both families.
            ("ALL: 10.0.0.0/8", "smtp", "10.255.0.1", unknown(), true),
            ("ALL: 10.0.0.0/8", "smtp", "11.0.0.1", unknown(), false),
            ("ALL: 0.0.0.0/0", "smtp", "203.0.113.5", unknown(), true),
            ("ALL: 0.0.0.0/0", "smtp", "2001:db8::1", unknown(), false),
            ("ALL: 192.0.2.9/32", "smtp", "192.0.2.9", unknown(), true),
            (
                "ALL: [2001:db8::]/32",
                "smtp",
                "2001:db8:ffff::1",
                unknown(),
                true,
            ),
            (
                "ALL: [2001:db8::]/32",
                "smtp",
                "2001:db9::1",
                unknown(),
                false,
            ),
            ("ALL: [::]/0", "smtp", "2001:db9::1", unknown(), true),
            ("ALL: [::]/0", "smtp", "192.0.2.1", unknown(), false),
            (
                "ALL: [2001:db8::1]/128",
                "smtp",
                "2001:db8::1",
                unknown(),
                true,
            ),
            // user@host with the RFC 1413 ident user.
            (
                "ALL: bob@.example.com",
                "smtp",
                "192.0.2.1",
                named("a.example.com").user("bob"),
                true,
            ),
            (
                "ALL: bob@.example.com",
                "smtp",
                "192.0.2.1",
                named("a.example.com").user("BOB"),
                true,
            ),
            (
                "ALL: bob@.example.com",
                "smtp",
                "192.0.2.1",
                named("a.example.com").user("eve"),
                false,
            ),
            (
                "ALL: bob@.example.com",
                "smtp",
                "192.0.2.1",
                named("a.example.com"),
                false,
            ),
            (
                "ALL: KNOWN@ALL",
                "smtp",
                "192.0.2.1",
                unknown().user("eve"),
                true,
            ),
            ("ALL: KNOWN@ALL", "smtp", "192.0.2.1", unknown(), false),
            ("ALL: UNKNOWN@ALL", "smtp", "192.0.2.1", unknown(), true),
            (
                "ALL: UNKNOWN@ALL",
                "smtp",
                "192.0.2.1",
                unknown().user("eve"),
                false,
            ),
            ("ALL: ALL@10.", "smtp", "10.0.0.1", unknown(), true),
            // Netgroups: no NIS directory, never a match.
            (
                "ALL: @netgroup1",
                "smtp",
                "192.0.2.1",
                named("netgroup1"),
                false,
            ),
            // EXCEPT in the client list, nested right to left.
            ("ALL: 10. EXCEPT 10.1.", "smtp", "10.2.0.1", unknown(), true),
            (
                "ALL: 10. EXCEPT 10.1.",
                "smtp",
                "10.1.0.1",
                unknown(),
                false,
            ),
            (
                "ALL: 10. EXCEPT 10.1. EXCEPT 10.1.1.",
                "smtp",
                "10.1.1.1",
                unknown(),
                true,
            ),
            (
                "ALL: 10. EXCEPT 10.1. EXCEPT 10.1.1.",
                "smtp",
                "10.1.2.1",
                unknown(),
                false,
            ),
            (
                "ALL: 10. EXCEPT 10.1. EXCEPT 10.1.1.",
                "smtp",
                "10.2.0.1",
                unknown(),
                true,
            ),
            // EXCEPT in the service list.
            ("ALL EXCEPT pop: ALL", "smtp", "192.0.2.1", unknown(), true),
            ("ALL EXCEPT pop: ALL", "POP", "192.0.2.1", unknown(), false),
            (
                "ALL EXCEPT pop imap EXCEPT imap: ALL",
                "imap",
                "192.0.2.1",
                unknown(),
                true,
            ),
            // service@host without a known local end: only ALL fits.
            (
                "smtp@mx.example.com: ALL",
                "smtp",
                "192.0.2.1",
                unknown(),
                false,
            ),
            ("smtp@ALL: ALL", "smtp", "192.0.2.1", unknown(), true),
        ];
        for (rule, service, client, mut fake, expected) in cases {
            let got = allows(rule, &request(service, client), &mut fake);
            assert_eq!(got, expected, "{rule} / {service} / {client} / {fake:?}");
        }
    }

    #[test]
    fn server_host() {
        let server = ServerHost {
            address: "198.51.100.7".parse().unwrap(),
            name: Some("MX1.example.com."),
        };
        let request = Request {
            server_host: Some(server),
            ..request("smtp", "192.0.2.1")
        };
        let cases = [
            ("smtp@mx1.example.com: ALL", true),
            ("smtp@mx2.example.com: ALL", false),
            ("smtp@.example.com: ALL", true),
            ("smtp@198.51.100.7: ALL", true),
            ("smtp@198.51.100.0/24: ALL", true),
            ("smtp@198.51.99.: ALL", false),
            ("smtp@KNOWN: ALL", true),
            ("smtp@LOCAL: ALL", false),
            ("smtp@DNSSPOOFER: ALL", false),
            ("imap@mx1.example.com: ALL", false),
        ];
        for (rule, expected) in cases {
            let mut fake = Fake::named("client.example.net");
            assert_eq!(allows(rule, &request, &mut fake), expected, "{rule}");
            assert_eq!(fake.calls, [0; 3], "{rule}: the server end needs no lookup");
        }
    }

    #[test]
    fn allow_before_deny_first_match_wins() {
        let request = request("imap", "192.0.2.1");
        let mut fake = Fake::named("a.example.com");
        let decision = run(
            &["smtp: ALL", "ALL: .example.com"],
            &["ALL: ALL"],
            &request,
            &mut fake,
        );
        assert_eq!(decision, Decision::Allowed { rule: 1 });
        let decision = run(
            &["smtp: ALL"],
            &["pop: ALL", "ALL: ALL", "ALL: KNOWN"],
            &request,
            &mut fake,
        );
        assert_eq!(decision, Decision::Denied { rule: 1 });
        assert!(!decision.is_allowed());
        let decision = run(&[], &["pop: ALL"], &request, &mut fake);
        assert_eq!(decision, Decision::AllowedByDefault);
        assert!(decision.is_allowed());
    }

    #[test]
    fn compact_form() {
        // Seed 002: "+imap:ALL$+pop:ALL$+http:ALL" and "-imap:*$-pop:*$-http:*".
        let filter = Filter::parse_compact("+imap:ALL$+pop:ALL$+http:ALL").unwrap();
        let mut fake = Fake::named("a.b");
        let decision = filter.decide(&request("pop", "192.0.2.1"), &mut fake);
        assert_eq!(decision, Decision::Allowed { rule: 1 });
        let filter = Filter::parse_compact("-imap:*$-pop:*$-http:*").unwrap();
        assert_eq!(
            filter.decide(&request("http", "192.0.2.1"), &mut fake),
            Decision::Denied { rule: 2 }
        );
        assert_eq!(
            filter.decide(&request("smtp", "192.0.2.1"), &mut fake),
            Decision::AllowedByDefault
        );
        let filter = Filter::parse_compact("+smtp:10.$-smtp:*").unwrap();
        assert!(
            filter
                .decide(&request("smtp", "10.0.0.1"), &mut fake)
                .is_allowed()
        );
        assert!(
            !filter
                .decide(&request("smtp", "11.0.0.1"), &mut fake)
                .is_allowed()
        );
    }

    /// Seed 002, "Mostly Denying":
    /// > The default policy (no access) is implemented with a single, trivial deny file:
    /// > `ALL: ALL`
    /// > The Allow filters, then, might be something like these:
    /// > `ALL: LOCAL @netgroup1`
    /// > `ALL: .siroe.com EXCEPT externalserver.siroe.com`
    /// > The first rule permits access from all hosts in the local domain (that is, all hosts
    /// > with no dot in their host name) and from members of the group netgroup1. The second
    /// > rule [...] permit[s] access from all hosts in the siroe.com domain, with the
    /// > exception of the host externalserver.siroe.com.
    #[test]
    fn seed_mostly_denying() {
        let allow = [
            "ALL: LOCAL @netgroup1",
            "ALL: .siroe.com EXCEPT externalserver.siroe.com",
        ];
        let deny = ["ALL: ALL"];
        let cases = [
            ("intranet", Decision::Allowed { rule: 0 }),
            ("pc1.siroe.com", Decision::Allowed { rule: 1 }),
            ("pc1.Eng.SIROE.com", Decision::Allowed { rule: 1 }),
            ("externalserver.siroe.com", Decision::Denied { rule: 0 }),
            ("host.example.com", Decision::Denied { rule: 0 }),
        ];
        for (name, expected) in cases {
            let mut fake = Fake::named(name);
            assert_eq!(
                run(&allow, &deny, &request("imap", "192.0.2.1"), &mut fake),
                expected,
                "{name}"
            );
        }
        let mut fake = Fake::nameless(NameLookup::Unknown);
        assert_eq!(
            run(&allow, &deny, &request("imap", "192.0.2.1"), &mut fake),
            Decision::Denied { rule: 0 }
        );
    }

    /// Seed 002, "Mostly Allowing":
    /// > `ALL: externalserver.siroe1.com, .siroe.asia.com`
    /// > `ALL EXCEPT pop: contractor.siroe1.com, .siroe.com`
    /// > The first filter denies all services to a particular host and to a specific domain.
    /// > The second filter permits nothing but POP access from a particular host and from a
    /// > specific domain.
    #[test]
    fn seed_mostly_allowing() {
        let deny = [
            "ALL: externalserver.siroe1.com, .siroe.asia.com",
            "ALL EXCEPT pop: contractor.siroe1.com, .siroe.com",
        ];
        let cases = [
            ("externalserver.siroe1.com", "pop", false),
            ("externalserver.siroe1.com", "imap", false),
            ("a.siroe.asia.com", "http", false),
            ("contractor.siroe1.com", "pop", true),
            ("contractor.siroe1.com", "imap", false),
            ("b.siroe.com", "pop", true),
            ("b.siroe.com", "http", false),
            ("friend.example.org", "imap", true),
            ("siroe1.com", "imap", true),
        ];
        for (name, service, allowed) in cases {
            let mut fake = Fake::named(name);
            let decision = run(&[], &deny, &request(service, "192.0.2.1"), &mut fake);
            assert_eq!(decision.is_allowed(), allowed, "{name} {service}");
        }
    }

    /// Seed 002, "Denying Access to Spoofed Domains":
    /// > `ALL: DNSSPOOFER`
    /// > This filter denies all services to all remote hosts whose IP addresses don't match
    /// > their DNS host names.
    #[test]
    fn seed_dns_spoofer() {
        let deny = ["ALL: DNSSPOOFER"];
        let mut honest = Fake::named("mx.example.com");
        assert!(run(&[], &deny, &request("smtp", "192.0.2.1"), &mut honest).is_allowed());
        let mut liar = Fake::named("mx.example.com").confirmed(Some(false));
        assert!(!run(&[], &deny, &request("smtp", "192.0.2.1"), &mut liar).is_allowed());
    }

    /// Seed 002, "EXCEPT Operator":
    /// > `ALL: ALL EXCEPT isserver.siroe.com`
    /// > If this were a Deny filter, it would deny access to all services to all clients
    /// > except those on the host machine isserver.siroe.com.
    #[test]
    fn seed_except() {
        let deny = ["ALL: ALL EXCEPT isserver.siroe.com"];
        let mut fake = Fake::named("isserver.siroe.com");
        assert!(run(&[], &deny, &request("imap", "192.0.2.1"), &mut fake).is_allowed());
        let mut fake = Fake::named("other.siroe.com");
        assert!(!run(&[], &deny, &request("imap", "192.0.2.1"), &mut fake).is_allowed());
    }

    /// Seed 002, "Filter Syntax":
    /// > `pop, imap, http: .europe.siroe.com .newyork.siroe.com`
    /// > If this is an Allow filter, it grants access to POP, IMAP, and HTTP services to all
    /// > clients in either of the domains europe.siroe.com and newyork.siroe.com.
    /// > `imap: srashad@xyz.europe.siroe.com` [as a Deny filter] denies the user srashad at
    /// > the host xyz.europe.siroe.com access to the IMAP service.
    #[test]
    fn seed_syntax_examples() {
        let allow = ["pop, imap, http: .europe.siroe.com .newyork.siroe.com"];
        for (name, service, matched) in [
            ("a.europe.siroe.com", "http", true),
            ("b.newyork.siroe.com", "imap", true),
            ("b.newyork.siroe.com", "smtp", false),
            ("c.asia.siroe.com", "pop", false),
        ] {
            let mut fake = Fake::named(name);
            assert_eq!(
                allows(allow[0], &request(service, "192.0.2.1"), &mut fake),
                matched,
                "{name}"
            );
        }
        let deny = ["imap: srashad@xyz.europe.siroe.com"];
        let mut srashad = Fake::named("xyz.europe.siroe.com").user("srashad");
        assert!(!run(&[], &deny, &request("imap", "192.0.2.1"), &mut srashad).is_allowed());
        let mut other = Fake::named("xyz.europe.siroe.com").user("jdoe");
        assert!(run(&[], &deny, &request("imap", "192.0.2.1"), &mut other).is_allowed());
    }

    /// Seed 002, "Controlling Access to Virtual Domains":
    /// > `ALL@msgServer.siroe1.com: @.siroe1.com`
    /// > `ALL@msgServer.siroe2.com: @.siroe2.com`
    /// > coupled with a Deny filter like: `ALL: ALL`
    /// > Each Allow filter permits only hosts within domainN to connect to the service whose
    /// > IP address corresponds to msgServer.siroeN.com. All other connections are denied.
    #[test]
    fn seed_virtual_domains() {
        let allow = [
            "ALL@msgServer.siroe1.com: @.siroe1.com",
            "ALL@msgServer.siroe2.com: @.siroe2.com",
        ];
        let deny = ["ALL: ALL"];
        let one = ServerHost {
            address: "198.51.100.1".parse().unwrap(),
            name: Some("msgserver.siroe1.com"),
        };
        let two = ServerHost {
            address: "198.51.100.2".parse().unwrap(),
            name: Some("msgserver.siroe2.com"),
        };
        let cases = [
            (one, "a.siroe1.com", Decision::Allowed { rule: 0 }),
            (two, "b.siroe2.com", Decision::Allowed { rule: 1 }),
            (one, "b.siroe2.com", Decision::Denied { rule: 0 }),
            (two, "a.siroe1.com", Decision::Denied { rule: 0 }),
            (one, "c.example.com", Decision::Denied { rule: 0 }),
        ];
        for (server, client, expected) in cases {
            let request = Request {
                server_host: Some(server),
                ..request("imap", "192.0.2.1")
            };
            let mut fake = Fake::named(client);
            assert_eq!(
                run(&allow, &deny, &request, &mut fake),
                expected,
                "{client} at {server:?}"
            );
        }
    }

    /// (allow, deny, service, client, expected [name, forward, ident] calls)
    type LazyCase = (
        &'static [&'static str],
        &'static [&'static str],
        &'static str,
        &'static str,
        [usize; 3],
    );

    #[test]
    fn a_name_that_does_not_map_back_matches_only_dnsspoofer() {
        let smtp = request("smtp", "203.0.113.9");
        // The seed's "mostly denying" set-up, and a PTR record the client wrote itself.
        for confirmed in [Some(false), None] {
            for allow in [
                "smtp: .example.com",
                "smtp: mail.example.com",
                "smtp: KNOWN",
            ] {
                let mut fake = Fake::named("mail.example.com").confirmed(confirmed);
                assert!(
                    matches!(
                        run(&[allow], &["smtp: ALL"], &smtp, &mut fake),
                        Decision::Denied { .. }
                    ),
                    "{allow} {confirmed:?}"
                );
            }
            let mut fake = Fake::named("printer").confirmed(confirmed);
            assert!(!allows("smtp: LOCAL", &smtp, &mut fake));
            let mut fake = Fake::named("printer").confirmed(confirmed);
            assert!(allows("smtp: DNSSPOOFER", &smtp, &mut fake));
            // It has a name, if one not to be trusted: UNKNOWN is for hosts without one.
            let mut fake = Fake::named("printer").confirmed(confirmed);
            assert!(!allows("smtp: UNKNOWN", &smtp, &mut fake));
        }
        let mut fake = Fake::named("mail.example.com");
        assert!(matches!(
            run(&["smtp: .example.com"], &["smtp: ALL"], &smtp, &mut fake),
            Decision::Allowed { .. }
        ));
    }

    #[test]
    fn lookups_are_lazy_and_made_once() {
        // (allow, deny, service, client, expected [name, forward, ident] calls)
        let cases: Vec<LazyCase> = vec![
            (
                &["ALL: 192.168."],
                &["ALL: ALL"],
                "smtp",
                "10.0.0.1",
                [0, 0, 0],
            ),
            (
                &["ALL: 10.0.0.0/8 [::1]"],
                &[],
                "smtp",
                "10.0.0.1",
                [0, 0, 0],
            ),
            (
                &["imap: .example.com"],
                &["pop: KNOWN"],
                "smtp",
                "10.0.0.1",
                [0, 0, 0],
            ),
            (&["ALL: ALL@ALL"], &[], "smtp", "10.0.0.1", [0, 0, 0]),
            (
                &["ALL: 10. EXCEPT host.example.com"],
                &[],
                "smtp",
                "11.0.0.1",
                [0, 0, 0],
            ),
            // A matching name is checked forward once, whatever else matches it.
            (
                &["ALL: .example.com", "ALL: KNOWN"],
                &["ALL: LOCAL"],
                "smtp",
                "10.0.0.1",
                [1, 1, 0],
            ),
            (
                &["ALL: DNSSPOOFER"],
                &["ALL: DNSSPOOFER"],
                "smtp",
                "10.0.0.1",
                [1, 1, 0],
            ),
            (
                &["ALL: bob@.example.org"],
                &["ALL: eve@.example.org"],
                "smtp",
                "10.0.0.1",
                [1, 0, 0],
            ),
            (
                &["ALL: bob@.example.com"],
                &["ALL: eve@.example.com"],
                "smtp",
                "10.0.0.1",
                [1, 1, 1],
            ),
            (
                &["ALL: KNOWN@10."],
                &["ALL: UNKNOWN@10."],
                "smtp",
                "10.0.0.1",
                [0, 0, 1],
            ),
        ];
        for (allow, deny, service, client, expected) in cases {
            let mut fake = Fake::named("mx.example.com").user("carol");
            run(allow, deny, &request(service, client), &mut fake);
            assert_eq!(fake.calls, expected, "{allow:?} {deny:?}");
        }
    }
}
