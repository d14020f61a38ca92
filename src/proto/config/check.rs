//! Semantic checks of a whole configuration, run by `commit check`, by every commit and
//! by `drawbridge config check`: what the statements mean together, once each has
//! parsed. Every problem is reported, each with the statement that causes it.

use std::fmt;
use std::net::SocketAddr;

use super::schema::Key;
use super::text::{entry_text, lex};
use super::{
    BUILTIN_CHANNELS, ChannelKeyword, ClassifyAction, Config, INTERNAL, ServiceName, TokenBackend,
};

/// The category every client not otherwise classified is usually put in; like
/// INTERNAL it needs no `set category` of its own.
pub const EXTERNAL: &str = "EXTERNAL";

/// One problem: the statement that causes it, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The statement as `show configuration` prints it, without `set`.
    pub statement: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.statement, self.message)
    }
}

/// Every problem of `config`, in the order of the configuration; empty when it may be
/// committed.
pub fn check(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let token = &config.system.token;
    if token.backend == TokenBackend::Pkcs11 && token.module.is_none() {
        problem(
            &mut out,
            "system token backend pkcs11".into(),
            "the pkcs11 backend needs a module: add 'set system token module PATH'",
        );
    }
    services(config, &mut out);
    rules_and_routes(config, &mut out);
    references(config, &mut out);
    out
}

/// The problems of certificates the configuration names (a service's, our client's)
/// that the store does not hold.
pub fn certificates(config: &Config, stored: &[String]) -> Vec<Problem> {
    let mut out = Vec::new();
    let named = ServiceName::ALL
        .into_iter()
        .filter_map(|name| {
            let cert = config.service(name).certificate.as_deref()?;
            Some((format!("service {name} certificate {cert}"), cert))
        })
        .chain(
            config
                .tls
                .client_certificate
                .as_deref()
                .map(|cert| (format!("tls client-certificate {cert}"), cert)),
        );
    for (statement, cert) in named {
        if !stored.iter().any(|s| s == cert) {
            problem(
                &mut out,
                statement,
                format!(
                    "no certificate {cert} is stored (stored: {})",
                    if stored.is_empty() {
                        "none".to_string()
                    } else {
                        stored.join(", ")
                    }
                ),
            );
        }
    }
    out
}

fn problem(out: &mut Vec<Problem>, statement: String, message: impl Into<String>) {
    out.push(Problem {
        statement,
        message: message.into(),
    });
}

fn services(config: &Config, out: &mut Vec<Problem>) {
    let mut seen: Vec<(SocketAddr, String)> = Vec::new();
    for name in ServiceName::ALL {
        let s = config.service(name);
        let listens = s.listen.len() + s.tls_listen.len();
        match (s.disabled, listens) {
            (false, 0) => problem(
                out,
                format!("service {name}"),
                format!(
                    "listens nowhere: give it 'listen ADDRESS:PORT', or turn it off with 'set service {name} disable'"
                ),
            ),
            (true, n) if n > 0 => problem(
                out,
                format!("service {name} disable"),
                "the service is disabled but has listen addresses: delete one or the other",
            ),
            _ => {}
        }
        proxy(name, s, out);
        let addresses = s
            .listen
            .iter()
            .map(|a| (a, "listen"))
            .chain(s.tls_listen.iter().map(|a| (a, "tls-listen")));
        for (addr, kind) in addresses {
            let statement = format!("service {name} {kind} {addr}");
            if let Some((_, first)) = seen.iter().find(|(other, _)| collide(*other, *addr)) {
                problem(
                    out,
                    statement.clone(),
                    format!("{addr} is taken already by '{first}'"),
                );
            }
            seen.push((*addr, statement));
        }
    }
}

/// The PROXY protocol needs its load balancers named, and never trusts everyone: a
/// network of every address would let any client claim any address, an INTERNAL one
/// included.
fn proxy(name: ServiceName, s: &super::Service, out: &mut Vec<Problem>) {
    if s.proxy_protocol && s.proxy_from.is_empty() {
        problem(
            out,
            format!("service {name} proxy-protocol yes"),
            format!(
                "no load balancer is trusted to send a PROXY header: add 'set service {name} proxy-from NETWORK' with the balancers' addresses"
            ),
        );
    }
    for network in s.proxy_from.iter().filter(|n| n.prefix() == 0) {
        problem(
            out,
            format!("service {name} proxy-from {network}"),
            "every address would be trusted to name its own client address: give the load balancers' networks",
        );
    }
}

/// Whether two listening addresses cannot both be bound: the same port on the same
/// address, or on a wildcard address that covers the other (an IPv6 wildcard covers
/// IPv4 too, as Linux binds it by default).
fn collide(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() {
        return false;
    }
    let covers =
        |w: SocketAddr, x: SocketAddr| w.ip().is_unspecified() && (w.is_ipv6() || x.is_ipv4());
    a.ip() == b.ip() || covers(a, b) || covers(b, a)
}

fn rules_and_routes(config: &Config, out: &mut Vec<Problem>) {
    for (number, rule) in &config.classify {
        if rule.action.is_none() {
            let statement =
                entry_text(config, "classify", &Key::Number(*number)).unwrap_or_default();
            problem(
                out,
                statement,
                "the rule has no action: give it 'category NAME' or 'deny \"TEXT\"'",
            );
        }
    }
    for (pattern, route) in &config.routes {
        if route.next_hop.is_none() {
            problem(
                out,
                format!("route {}", lex::word(&pattern.to_string())),
                "the route has no next hop: give it 'relay HOSTS', 'smarthost HOSTS' or 'mx'",
            );
        }
        if let (Some(user), true) = (&route.auth_user, route.is_mx()) {
            problem(
                out,
                format!("route {} auth user {user}", lex::word(&pattern.to_string())),
                "a route by MX lookup logs in nowhere (its password would go to any domain's mail hosts): log in to a 'smarthost HOSTS' or 'relay HOSTS'",
            );
        }
    }
    for (number, rule) in &config.relay_rules {
        if rule.action.is_none() {
            let statement =
                entry_text(config, "relay-rule", &Key::Number(*number)).unwrap_or_default();
            problem(
                out,
                statement,
                "the rule has no action: give it 'allow' or 'deny \"TEXT\"'",
            );
        }
    }
}

fn references(config: &Config, out: &mut Vec<Problem>) {
    let channel_known = |name: &str| config.has_channel(name);
    let unknown_channel = |name: &str| {
        let built_in: Vec<&str> = BUILTIN_CHANNELS.iter().map(|(n, _)| *n).collect();
        format!(
            "no channel {name} is configured or built in (built in: {})",
            built_in.join(", ")
        )
    };
    for name in ServiceName::ALL {
        if let Some(ch) = config
            .service(name)
            .channel
            .as_deref()
            .filter(|c| !channel_known(c))
        {
            problem(
                out,
                format!("service {name} channel {ch}"),
                unknown_channel(ch),
            );
        }
    }
    for (number, rule) in &config.classify {
        if let Some(ClassifyAction::Category(c)) = &rule.action
            && c != INTERNAL
            && c != EXTERNAL
            && !config.categories.contains_key(c)
        {
            let statement =
                entry_text(config, "classify", &Key::Number(*number)).unwrap_or_default();
            problem(
                out,
                statement,
                format!(
                    "category {c} is not defined: add 'set category {c}' (with its ruleset or channel), or use INTERNAL or EXTERNAL"
                ),
            );
        }
    }
    for (pattern, route) in &config.routes {
        if let Some(ch) = route.channel.as_deref().filter(|c| !channel_known(c)) {
            problem(
                out,
                format!("route {} channel {ch}", lex::word(&pattern.to_string())),
                unknown_channel(ch),
            );
        }
    }
    for (name, channel) in &config.channels {
        for keyword in &channel.keywords {
            if let ChannelKeyword::TlsSwitchChannel(to) | ChannelKeyword::SaslSwitchChannel(to) =
                keyword
                && !channel_known(to)
            {
                problem(
                    out,
                    format!("channel {name} keywords"),
                    format!(
                        "{} names a channel that does not exist: {}",
                        keyword.name(),
                        unknown_channel(to)
                    ),
                );
            }
        }
    }
    for (name, category) in &config.categories {
        if let Some(r) = category
            .ruleset
            .as_deref()
            .filter(|r| !config.rulesets.contains_key(*r))
        {
            problem(
                out,
                format!("category {name} ruleset {r}"),
                format!("no ruleset {r} is defined: add 'set ruleset {r} mechanisms \"…\"'"),
            );
        }
        if let Some(ch) = category.channel.as_deref().filter(|c| !channel_known(c)) {
            problem(
                out,
                format!("category {name} channel {ch}"),
                unknown_channel(ch),
            );
        }
    }
    for (number, rule) in &config.relay_rules {
        for ch in [&rule.source, &rule.destination].into_iter().flatten() {
            if !channel_known(ch) {
                let statement =
                    entry_text(config, "relay-rule", &Key::Number(*number)).unwrap_or_default();
                problem(out, statement, unknown_channel(ch));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::config::host_default;
    use crate::proto::config::text::parse_into;

    fn problems(extra: &str) -> Vec<String> {
        let mut config = host_default();
        parse_into(&mut config, extra).unwrap();
        check(&config).iter().map(Problem::to_string).collect()
    }

    #[test]
    fn the_board_defaults_pass() {
        assert_eq!(check(&host_default()), []);
    }

    #[test]
    fn each_semantic_error_names_its_statement() {
        let cases: &[(&str, &str)] = &[
            (
                "set route example.org channel no_such_channel\nset route example.org mx\n",
                "route example.org channel no_such_channel: no channel no_such_channel is configured or built in",
            ),
            (
                "set category INTERNAL ruleset NOPE\n",
                "category INTERNAL ruleset NOPE: no ruleset NOPE is defined",
            ),
            (
                "set category PARTNER channel tcp_nowhere\n",
                "category PARTNER channel tcp_nowhere: no channel tcp_nowhere",
            ),
            (
                "set classify 40 remote 192.0.2.0/24 category PARTNER\n",
                "classify 40 remote 192.0.2.0/24 category PARTNER: category PARTNER is not defined",
            ),
            (
                "set classify 40 remote 192.0.2.0/24\n",
                "classify 40 remote 192.0.2.0/24: the rule has no action",
            ),
            (
                "set route example.org concurrency 3\n",
                "route example.org: the route has no next hop",
            ),
            (
                "set route example.org mx\nset route example.org auth user relay@example.org\n",
                "route example.org auth user relay@example.org: a route by MX lookup logs in nowhere",
            ),
            (
                "set relay-rule 20 source tcp_auth\n",
                "relay-rule 20 source tcp_auth: the rule has no action",
            ),
            (
                "set relay-rule 20 source tcp_lcoal allow\n",
                "relay-rule 20 source tcp_lcoal allow: no channel tcp_lcoal",
            ),
            (
                "set channel tcp_x keywords \"maytls tlsswitchchannel tcp_y\"\n",
                "channel tcp_x keywords: tlsswitchchannel names a channel that does not exist: no channel tcp_y",
            ),
            (
                "set system token backend pkcs11\n",
                "system token backend pkcs11: the pkcs11 backend needs a module",
            ),
            (
                "set service outbound channel tcp_out\n",
                "service outbound channel tcp_out: no channel tcp_out",
            ),
            (
                "delete service outbound listen\n",
                "service outbound: listens nowhere",
            ),
            (
                "set service outbound disable\n",
                "service outbound disable: the service is disabled but has listen addresses",
            ),
            (
                "set service outbound listen 127.0.0.1:2525\n",
                "service outbound listen 127.0.0.1:2525: 127.0.0.1:2525 is taken already by 'service inbound listen 127.0.0.1:2525'",
            ),
            (
                "set service outbound tls-listen 0.0.0.0:2525\n",
                "service outbound tls-listen 0.0.0.0:2525: 0.0.0.0:2525 is taken already",
            ),
            (
                "set service outbound tls-listen [::]:2587\n",
                "service outbound tls-listen [::]:2587: [::]:2587 is taken already by 'service outbound listen 127.0.0.1:2587'",
            ),
            (
                "set service inbound proxy-protocol yes\n",
                "service inbound proxy-protocol yes: no load balancer is trusted to send a PROXY header: add 'set service inbound proxy-from NETWORK'",
            ),
            (
                "set service outbound proxy-protocol yes\nset service outbound proxy-from ::/0\n",
                "service outbound proxy-from ::/0: every address would be trusted to name its own client address",
            ),
        ];
        for (text, want) in cases {
            let got = problems(text);
            assert!(
                got.iter().any(|p| p.starts_with(want)),
                "{text}\n  got:  {got:#?}\n  want: {want}"
            );
        }
    }

    #[test]
    fn the_proxy_protocol_passes_with_its_balancers_named() {
        let text = "set service inbound proxy-protocol yes\n\
                    set service inbound proxy-from 10.1.0.0/16\n\
                    set service inbound proxy-from 2001:db8::/48\n";
        assert_eq!(problems(text), Vec::<String>::new());
        // Balancers named while the protocol is off: nothing expects a header yet.
        assert_eq!(
            problems("set service outbound proxy-from 10.1.0.5\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_service_names_a_stored_certificate() {
        let mut config = host_default();
        parse_into(&mut config, "set service inbound certificate mail-2026\n").unwrap();
        assert_eq!(certificates(&config, &["mail-2026".into()]), []);
        let got = certificates(&config, &["0-self-signed".into()]);
        assert_eq!(
            got[0].to_string(),
            "service inbound certificate mail-2026: no certificate mail-2026 is stored (stored: 0-self-signed)"
        );
    }

    #[test]
    fn every_problem_is_reported_not_only_the_first() {
        let got = problems(
            "set route example.org concurrency 3\n\
             set category INTERNAL ruleset NOPE\n\
             set relay-rule 20 source tcp_lcoal allow\n\
             delete service outbound listen\n",
        );
        assert_eq!(got.len(), 4, "{got:#?}");
    }

    #[test]
    fn a_disabled_service_and_distinct_ports_pass() {
        assert_eq!(
            problems(
                "delete service outbound listen\nset service outbound disable\n\
                 set service inbound tls-listen 127.0.0.1:4650\n\
                 set service inbound listen [::1]:2525\n"
            ),
            Vec::<String>::new()
        );
        assert!(!collide(
            "127.0.0.1:25".parse().unwrap(),
            "127.0.0.2:25".parse().unwrap()
        ));
        assert!(!collide(
            "0.0.0.0:25".parse().unwrap(),
            "[::1]:25".parse().unwrap()
        ));
        assert!(collide(
            "[::]:25".parse().unwrap(),
            "10.0.0.1:25".parse().unwrap()
        ));
    }
}
