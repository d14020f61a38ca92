//! The one routing function: where mail for a checked recipient goes (SPEC §3, routing).
//!
//! Policy decides on its answer, `explain` prints it and the queue manager delivers by
//! it, so what was accepted is delivered exactly where `explain` says. Nothing else in the
//! gateway splits a recipient or matches a route pattern.
//!
//! * A domain name is routed by its name in lower case: an exact pattern, then the
//!   longest `.suffix`, then `*`.
//! * Mail for our host is routed by our host name and delivered to
//!   `local@HOST-NAME`: a bare `postmaster` (RFC 5321 §4.5.1), and an address literal
//!   naming one of our own addresses or a loopback address (RFC 5321 §4.1.3: the
//!   literal is this host).
//! * An address literal of another host names no domain, so only `*` can route it; with
//!   `* mx` the mail goes to that address (RFC 5321 §5.1).

use std::net::IpAddr;

use crate::proto::config::{Config, DomainPattern, NextHop, Route};
use crate::proto::smtp::address::Recipient;

/// Why mail goes where it goes, for the policy's decisions and `explain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A domain name, routed by its name.
    Domain,
    /// A bare `postmaster`: our own host.
    Postmaster,
    /// An address literal naming one of our addresses: our own host.
    OurLiteral(IpAddr),
    /// An address literal naming another host.
    ForeignLiteral(IpAddr),
}

impl Target {
    /// Mail for our own host (by a bare `postmaster` or one of our literals).
    pub fn is_our_host(&self) -> bool {
        matches!(self, Target::Postmaster | Target::OurLiteral(_))
    }
}

/// Where one recipient goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routed {
    /// The address the next hop is given: the recipient as written, or for mail to our
    /// host, `local@HOST-NAME`.
    pub address: String,
    /// What the route was chosen by: a domain in lower case, our host name, or a literal.
    pub domain: String,
    pub target: Target,
    /// The route's pattern; the route itself is `config.routes[pattern]`.
    pub pattern: DomainPattern,
}

impl Routed {
    /// The route this recipient takes in `config` (the configuration it was routed in).
    pub fn route<'c>(&self, config: &'c Config) -> Option<&'c Route> {
        config.routes.get(&self.pattern)
    }
}

/// A recipient no route matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoRoute {
    /// What a route was looked for: a domain in lower case, our host name, or a literal.
    pub domain: String,
    pub target: Target,
}

/// Routes `rcpt`; `ours` are the gateway's own addresses.
pub fn route(config: &Config, ours: &[IpAddr], rcpt: &Recipient) -> Result<Routed, NoRoute> {
    let host = config.system.host_name.to_ascii_lowercase();
    // Our postmaster, however written, goes where `system postmaster` says.
    if let Some(postmaster) = &config.system.postmaster
        && is_our_postmaster(config, ours, rcpt)
    {
        let target = match rcpt.domain().and_then(|d| d.literal_address()) {
            Some(ip) => Target::OurLiteral(ip),
            None => Target::Postmaster,
        };
        let domain = postmaster.domain().routing_name();
        let Some((pattern, _)) = config.route_for(&domain) else {
            return Err(NoRoute { domain, target });
        };
        return Ok(Routed {
            address: postmaster.to_string(),
            domain,
            target,
            pattern: pattern.clone(),
        });
    }
    let (target, domain) = match rcpt.domain() {
        None => (Target::Postmaster, host.clone()),
        Some(d) => match d.literal_address() {
            Some(ip) if is_ours(ip, ours) => (Target::OurLiteral(ip), host.clone()),
            Some(ip) => (Target::ForeignLiteral(ip), d.routing_name()),
            None => (Target::Domain, d.routing_name()),
        },
    };
    let pattern = match target {
        Target::ForeignLiteral(_) => config
            .routes
            .get_key_value(&DomainPattern::Any)
            .map(|(p, _)| p),
        _ => config.route_for(&domain).map(|(p, _)| p),
    };
    let Some(pattern) = pattern else {
        return Err(NoRoute { domain, target });
    };
    let address = if target.is_our_host() {
        format!("{}@{}", rcpt.local_part(), config.system.host_name)
    } else {
        rcpt.to_string()
    };
    Ok(Routed {
        address,
        domain,
        target,
        pattern: pattern.clone(),
    })
}

/// Whether `rcpt` is the postmaster of this host (RFC 5321 §4.5.1): a bare `postmaster`,
/// or `postmaster` at our host name or at one of our address literals.
pub fn is_our_postmaster(config: &Config, ours: &[IpAddr], rcpt: &Recipient) -> bool {
    if !rcpt.is_postmaster() {
        return false;
    }
    match rcpt.domain() {
        None => true,
        Some(d) => match d.literal_address() {
            Some(ip) => is_ours(ip, ours),
            None => d.routing_name() == config.system.host_name.to_ascii_lowercase(),
        },
    }
}

/// One line for `explain` and logs: `route PATTERN for DOMAIN: NEXT HOP, to <ADDRESS>`.
pub fn describe(config: &Config, routed: &Routed) -> String {
    let hop = routed
        .route(config)
        .and_then(|r| r.next_hop.as_ref())
        .map_or_else(|| "no next hop".to_string(), describe_hop);
    format!(
        "route {} for {}: {hop}; delivered to <{}>",
        routed.pattern, routed.domain, routed.address
    )
}

/// The next hop in the administrator's words.
pub fn describe_hop(hop: &NextHop) -> String {
    use crate::proto::config::text::value::format_hosts;
    match hop {
        NextHop::Relay(h) => format!("relay {}", format_hosts(h)),
        NextHop::Smarthost(h) => format!("smarthost {}", format_hosts(h)),
        NextHop::Mx => "MX lookup".to_string(),
    }
}

/// One of `ours`, or a loopback address (which always names this host). IPv4 and its
/// IPv4-mapped IPv6 form are the same address.
fn is_ours(ip: IpAddr, ours: &[IpAddr]) -> bool {
    let ip = ip.to_canonical();
    ip.is_loopback() || ours.iter().any(|o| o.to_canonical() == ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::config::text::parse_into;

    const OURS: &[IpAddr] = &[
        IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 25)),
        IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x25)),
    ];

    fn config(routes: &str) -> Config {
        let mut c = Config::default();
        parse_into(
            &mut c,
            &format!("set system host-name GW.Example.com\n{routes}"),
        )
        .unwrap();
        c
    }

    fn routed(c: &Config, rcpt: &str) -> Result<Routed, NoRoute> {
        route(c, OURS, &Recipient::parse(rcpt).unwrap())
    }

    const ROUTES: &str = "set route .example.com relay [10.1.1.5]:25\n\
                          set route example.org relay [10.1.1.6]:25\n\
                          set route * smarthost [10.1.1.7]:25\n";

    #[test]
    fn names_route_by_exact_then_suffix_then_any() {
        let c = config(ROUTES);
        let r = routed(&c, "bob@Example.ORG").unwrap();
        assert_eq!(r.pattern, DomainPattern::Exact("example.org".into()));
        assert_eq!(
            (r.address.as_str(), r.domain.as_str()),
            ("bob@Example.ORG", "example.org")
        );
        let r = routed(&c, "bob@a.b.example.com").unwrap();
        assert_eq!(r.pattern, DomainPattern::Suffix("example.com".into()));
        assert_eq!(
            routed(&c, "bob@example.net").unwrap().pattern,
            DomainPattern::Any
        );
        assert_eq!(
            routed(&c, "bob@example.com").unwrap().pattern,
            DomainPattern::Any
        );
    }

    #[test]
    fn our_literals_and_postmaster_are_our_host() {
        let c = config(ROUTES);
        for (rcpt, address) in [
            ("bob@[192.0.2.25]", "bob@GW.Example.com"),
            (
                "postmaster@[IPv6:2001:db8::25]",
                "postmaster@GW.Example.com",
            ),
            ("x@[IPv6:::ffff:192.0.2.25]", "x@GW.Example.com"),
            ("x@[127.0.0.9]", "x@GW.Example.com"),
            ("x@[IPv6:::1]", "x@GW.Example.com"),
            ("PostMaster", "PostMaster@GW.Example.com"),
        ] {
            let r = routed(&c, rcpt).unwrap();
            assert!(r.target.is_our_host(), "{rcpt}");
            assert_eq!(r.domain, "gw.example.com", "{rcpt}");
            assert_eq!(
                r.pattern,
                DomainPattern::Suffix("example.com".into()),
                "{rcpt}"
            );
            assert_eq!(r.address, address);
            // The delivered address routes the same way again.
            let again = routed(&c, &r.address).unwrap();
            assert_eq!((again.pattern, again.domain), (r.pattern, r.domain));
        }
    }

    #[test]
    fn our_postmaster_goes_where_system_postmaster_says() {
        let c = config(&format!(
            "{ROUTES}set system postmaster hostmaster@example.org\n"
        ));
        for rcpt in [
            "postmaster",
            "PostMaster@gw.example.com",
            "postmaster@[192.0.2.25]",
        ] {
            let r = routed(&c, rcpt).unwrap();
            assert_eq!(r.address, "hostmaster@example.org", "{rcpt}");
            assert_eq!(
                r.pattern,
                DomainPattern::Exact("example.org".into()),
                "{rcpt}"
            );
            // Delivery routes the stored address the same way.
            assert_eq!(routed(&c, &r.address).unwrap().pattern, r.pattern);
        }
        // Another domain's postmaster is that domain's.
        let r = routed(&c, "postmaster@example.net").unwrap();
        assert_eq!(r.address, "postmaster@example.net");
        assert!(!is_our_postmaster(
            &c,
            OURS,
            &Recipient::parse("postmaster@example.net").unwrap()
        ));
        assert!(!is_our_postmaster(
            &c,
            OURS,
            &Recipient::parse("bob@gw.example.com").unwrap()
        ));
    }

    #[test]
    fn foreign_literals_route_only_by_any() {
        let c = config(ROUTES);
        let r = routed(&c, "bob@[192.0.2.1]").unwrap();
        assert_eq!(
            r.target,
            Target::ForeignLiteral("192.0.2.1".parse().unwrap())
        );
        assert_eq!(r.pattern, DomainPattern::Any);
        assert_eq!(r.address, "bob@[192.0.2.1]");
        let c = config("set route .example.com relay [10.1.1.5]:25\n");
        let e = routed(&c, "bob@[192.0.2.1]").unwrap_err();
        assert_eq!(e.domain, "[192.0.2.1]");
        assert_eq!(
            e.target,
            Target::ForeignLiteral("192.0.2.1".parse().unwrap())
        );
    }

    #[test]
    fn no_route_names_what_was_looked_for() {
        let c = config("set route example.org mx\n");
        assert_eq!(
            routed(&c, "bob@[192.0.2.25]"),
            Err(NoRoute {
                domain: "gw.example.com".into(),
                target: Target::OurLiteral("192.0.2.25".parse().unwrap())
            })
        );
        let r = routed(&c, "bob@example.org").unwrap();
        assert!(describe(&c, &r).starts_with("route example.org for example.org: MX lookup"));
    }
}
