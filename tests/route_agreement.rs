//! One recipient, one decision, one route: over generated RCPT paths (percent hacks, bang
//! paths, quoted `@`, source routes; names in mixed case, trailing dots, IPv4, IPv6 and
//! general literals, ours and foreign), the policy's verdict, `explain`'s decision and
//! delivery line, and the destination the queue manager picks all agree.

use std::net::IpAddr;

use drawbridge::proto::config::{Config, DomainPattern, ServiceName, text};
use drawbridge::proto::policy::{self, ExplainInput, RcptCheck, Verdict, route};
use drawbridge::proto::queue::core::{DestKey, destination};
use drawbridge::proto::smtp::address::{Path, Recipient};

/// Our addresses, as the gateway would list them.
const OURS: &[IpAddr] = &[
    IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 25)),
    IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x25)),
];

fn config(any: &str) -> Config {
    text::parse(&format!(
        "set system host-name gw.example.com\n\
         set service inbound listen 192.0.2.25:25\n\
         set classify 10 remote 10.0.0.0/8 category INTERNAL\n\
         set classify 20 remote 0.0.0.0/0 category EXTERNAL\n\
         set route example.com relay [10.1.1.5]:25\n\
         set route .example.com relay [10.1.1.5]:25\n\
         set route partner.test smarthost [10.1.1.9]:25\n\
         set route * {any}\n\
         set relay-rule 10 source tcp_local destination tcp_local deny \"5.7.1 SMTP relaying not permitted\"\n"
    ))
    .unwrap()
}

/// A small deterministic generator (xorshift64*).
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// One generated RCPT path, with its angle brackets.
fn generate(g: &mut Gen) -> String {
    let local = match g.next() % 8 {
        0 => format!(
            "{}%{}",
            g.pick(&["user", "a.b"]),
            g.pick(&["evil.test", "x"])
        ),
        1 => format!(
            "{}!{}",
            g.pick(&["evil.test", "host"]),
            g.pick(&["user", "u"])
        ),
        2 => format!(
            "\"{}@{}\"",
            g.pick(&["user", "a b"]),
            g.pick(&["evil.test", "x"])
        ),
        3 => format!("\"{}\"", g.pick(&["a b", "a\\\"b", "x%y", "p!q"])),
        4 => g
            .pick(&["postmaster", "PostMaster", "POSTMASTER"])
            .to_string(),
        _ => g.pick(&["bob", "Bob.Smith", "x+tag", "a_b"]).to_string(),
    };
    let domain = g
        .pick(&[
            "example.com",
            "EXAMPLE.Com",
            "gw.example.com",
            "sub.example.com",
            "example.com.",
            "evil.test",
            "Evil.TEST",
            "partner.test",
            "[192.0.2.25]",
            "[192.0.2.1]",
            "[127.0.0.1]",
            "[IPv6:2001:db8::25]",
            "[ipv6:2001:DB8::25]",
            "[IPv6:2001:db8::1]",
            "[IPv6:::ffff:192.0.2.25]",
            "[IPv6:::1]",
            "[x400:c=us]",
            "[300.1.1.1]",
        ])
        .to_string();
    let route = match g.next() % 6 {
        0 => format!(
            "@{}:",
            g.pick(&["relay.test", "[192.0.2.25]", "gw.example.com"])
        ),
        1 => "@a.test,@b.test:".to_string(),
        _ => String::new(),
    };
    match g.next() % 12 {
        0 => format!("<{route}{local}>"),
        1 => format!(
            "<{route}{local}@{domain}@{}>",
            g.pick(&["example.com", "x"])
        ),
        _ => format!("<{route}{local}@{domain}>"),
    }
}

#[test]
fn policy_explain_and_delivery_route_every_recipient_alike() {
    let mut g = Gen(0x853c_49e6_748f_ea9b);
    let mut accepted = 0;
    let mut refused = 0;
    for any in ["smarthost [10.1.1.7]:25", "mx"] {
        let config = config(any);
        for _ in 0..4000 {
            let path_text = generate(&mut g);
            let client_ip: IpAddr = g.pick(&["10.1.2.3", "198.51.100.7"]).parse().unwrap();
            let auth_user = (g.next() % 5 == 0).then_some("alice");
            let e = policy::explain(
                &config,
                ExplainInput {
                    from_ip: client_ip,
                    tls: true,
                    auth_user,
                    mail: "<sender@example.org>",
                    rcpt: &path_text,
                    service: ServiceName::Inbound,
                    our_addresses: OURS,
                },
            );
            // The server core's parse of the same path.
            let parsed = Path::parse_prefix(&path_text)
                .ok()
                .filter(|(_, rest)| rest.is_empty())
                .and_then(|(p, _)| Some((Recipient::from_target(p.target)?, p.had_source_route)));
            let Some((rcpt, had_source_route)) = parsed else {
                assert_eq!(
                    e.decision, "501 5.1.3 Bad recipient address syntax",
                    "{path_text}"
                );
                continue;
            };
            let category = if client_ip.to_string().starts_with("10.") {
                "INTERNAL"
            } else {
                "EXTERNAL"
            };
            let d = policy::decide(
                &config,
                &policy::Client {
                    service: ServiceName::Inbound,
                    category: Some(category),
                    tls: true,
                    auth_user,
                    our_addresses: OURS,
                },
                &RcptCheck {
                    mail_from: "sender@example.org",
                    rcpt: &rcpt,
                    had_source_route,
                },
            );
            assert_eq!(e.decision, d.reply().one_line(), "{path_text}");
            let Verdict::Allow(routed) = d.verdict else {
                refused += 1;
                continue;
            };
            accepted += 1;
            let line = format!("delivery: {}", route::describe(&config, &routed));
            assert!(e.steps.contains(&line), "{path_text}: {:#?}", e.steps);
            // Mail for our host, or from a client that may not relay, never leaves by `*`.
            let trusted = category == "INTERNAL" || auth_user.is_some();
            if routed.target.is_our_host() || !trusted {
                assert_ne!(routed.pattern, DomainPattern::Any, "{path_text}");
            }
            // Delivery, from the address the envelope stores.
            let dest = destination(&config, OURS, &routed.address)
                .unwrap_or_else(|r| panic!("{path_text}: {}", r.one_line()));
            match dest {
                DestKey::Route(p) => assert_eq!(p, routed.pattern, "{path_text}"),
                DestKey::Mx { route, domain } => {
                    assert_eq!(route, routed.pattern, "{path_text}");
                    assert_eq!(domain, routed.domain, "{path_text}");
                }
            }
        }
    }
    // The generator reaches both outcomes often.
    assert!(accepted > 1000 && refused > 1000, "{accepted} {refused}");
}
