//! The relay policy of the legacy products, as pure functions: which channel a session
//! is on, which SASL mechanisms it is offered, and whether one recipient may be relayed,
//! with a trace of every step for `explain`. **Invariant:** one walk decides, traced or
//! not, so the verdict a session gets is the one `explain` shows.
//!
//! Nothing here does I/O or reads a clock: the caller hands in the configuration, what
//! it knows of the client (category, TLS, authenticated user) and the envelope, and gets
//! a [`Decision`] back.
//!
//! # How a recipient is decided
//!
//! 1. **Source channel.** The category's `channel`, else the service's `channel`, else the
//!    built-in one: `tcp_intranet` for INTERNAL, `tcp_local` for every other category and
//!    for unclassified clients. With TLS up, the channel's `tlsswitchchannel` is
//!    followed; then, once authenticated, the `saslswitchchannel` of the channel reached.
//!    A channel that says `noswitchchannel` keeps its sessions (see
//!    [`Channel::switching_allowed`]).
//! 2. **Address smuggling.** A client that is neither INTERNAL nor authenticated is
//!    refused any recipient that hides a second hop (see [`smuggle`]), whatever the rules
//!    say: `550 5.7.1 <addr>: Relay access denied`.
//! 3. **Route**, by [`route::route`], the function delivery uses too: the recipient's
//!    domain picks a route; a bare `postmaster` and a literal of one of our addresses are
//!    our host. From a client that is neither INTERNAL nor authenticated, only
//!    `postmaster` is taken at one of our literals, and nothing at another host's
//!    literal. No route: refused. The route's `channel` is the destination channel, else
//!    the built-in one: `tcp_internal` for a relay list (our own domains), `tcp_local`
//!    for MX and smarthost routes.
//! 4. **Relay rules**, by number; the first whose source, from, destination and to all
//!    match decides: `allow`, or `deny "TEXT"` with the reply `550 TEXT` (an enhanced code
//!    at the start of the text is used, else `5.7.1`).
//! 5. **No rule matched: the closed-relay baseline.** Allowed when the route is to an
//!    internal relay (one of our domains), or the client is INTERNAL, or authenticated;
//!    otherwise `550 5.7.1 <addr>: Relay access denied`.
//!
//! So the relay is closed without any rule: rules can only deny more, or open a path the
//! administrator names with `allow`. The factory configuration has no rules; the host
//! board's default writes the seeds' `tcp_local → tcp_local` deny rule, which gives the
//! same decisions with the seeds' text.

pub mod explain;
pub mod route;
pub mod smuggle;

pub use explain::{ExplainInput, Explanation, explain};
pub use route::{NoRoute, Routed, Target};
pub use smuggle::smuggles_route;

use std::net::IpAddr;

use crate::proto::config::{
    CHANNEL_INTERNAL, CHANNEL_INTRANET, CHANNEL_LOCAL, Channel, Config, DEFAULT_RULESET, INTERNAL,
    NextHop, RelayAction, RelayRule, Route, Ruleset, ServiceName,
};
use crate::proto::smtp::address::Recipient;
use crate::proto::smtp::reply::{Enhanced, Reply};

/// What the policy knows about the client of a session.
#[derive(Clone, Copy, Debug)]
pub struct Client<'a> {
    pub service: ServiceName,
    /// The category from classification; `None` when no classify rule matched.
    pub category: Option<&'a str>,
    /// TLS is up (STARTTLS or implicit TLS).
    pub tls: bool,
    /// The user the client authenticated as.
    pub auth_user: Option<&'a str>,
    /// Our own addresses: an address literal naming one of them is our host.
    pub our_addresses: &'a [IpAddr],
}

impl Client<'_> {
    /// INTERNAL or authenticated: such a client may relay, and its addresses are not
    /// checked for smuggled routes.
    pub fn is_trusted(&self) -> bool {
        self.category == Some(INTERNAL) || self.auth_user.is_some()
    }
}

/// One recipient to decide, with its transaction's sender.
#[derive(Clone, Copy, Debug)]
pub struct RcptCheck<'a> {
    /// The envelope sender, `""` for the null sender.
    pub mail_from: &'a str,
    /// The recipient, as the session core checked it.
    pub rcpt: &'a Recipient,
    /// The RCPT path carried a source route, which the session core dropped.
    pub had_source_route: bool,
}

/// Accept, with where the recipient goes (delivery takes the same route), or refuse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow(Routed),
    Deny(Reply),
}

/// A verdict and the steps that led to it, one human-readable line each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub trace: Vec<String>,
}

impl Decision {
    /// The reply the client gets: `250 2.1.5 Ok` or the refusal.
    pub fn reply(&self) -> Reply {
        match &self.verdict {
            Verdict::Allow(_) => Reply::new(250, "2.1.5", "Ok"),
            Verdict::Deny(r) => r.clone(),
        }
    }
}

/// The SASL mechanisms a session offers: the session core advertises `advertised`, and
/// answers `538 5.7.11` to one in `needs_tls` before TLS (RFC 4954 §6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthPolicy {
    pub advertised: Vec<String>,
    pub needs_tls: Vec<String>,
}

/// The ruleset a category selects, with a line saying why.
pub fn ruleset_for(config: &Config, category: Option<&str>) -> (Ruleset, String) {
    let explicit = category
        .and_then(|c| config.categories.get(c))
        .and_then(|c| c.ruleset.as_deref());
    if let Some(name) = explicit {
        return match config.rulesets.get(name) {
            Some(r) => (*r, format!("ruleset {name} (set by the category)")),
            None => (
                Ruleset::factory(),
                format!(
                    "ruleset {name} is named by the category but not defined: the factory ruleset"
                ),
            ),
        };
    }
    if let Some(r) = category.and_then(|c| config.rulesets.get(c)) {
        let name = category.unwrap_or_default();
        return (*r, format!("ruleset {name} (named like the category)"));
    }
    if let Some(r) = config.rulesets.get(DEFAULT_RULESET) {
        return (*r, format!("ruleset {DEFAULT_RULESET}"));
    }
    (Ruleset::factory(), "the factory ruleset".to_string())
}

fn describe_ruleset(ruleset: &Ruleset) -> String {
    let offered = crate::proto::config::text::value::format_mechanisms(ruleset.mechanisms);
    let mut text = if offered.is_empty() {
        "offers no SASL mechanism".to_string()
    } else {
        format!("offers {offered}")
    };
    let restricted: Vec<&str> = ruleset
        .needs_tls
        .iter()
        .filter(|m| ruleset.mechanisms.contains(*m))
        .map(|m| m.as_str())
        .collect();
    if !restricted.is_empty() {
        text.push_str(&format!("; {} only with TLS", restricted.join(" ")));
    }
    text
}

/// The SASL mechanisms offered to clients of `category` (SPEC §3, security rulesets).
pub fn auth_policy(config: &Config, category: Option<&str>) -> AuthPolicy {
    let (ruleset, _) = ruleset_for(config, category);
    AuthPolicy {
        advertised: ruleset
            .mechanisms
            .iter()
            .map(|m| m.as_str().to_string())
            .collect(),
        needs_tls: ruleset
            .needs_tls
            .iter()
            .filter(|m| ruleset.mechanisms.contains(*m))
            .map(|m| m.as_str().to_string())
            .collect(),
    }
}

/// The source channel of a session, with the steps that chose it appended to `trace`.
pub fn source_channel(config: &Config, client: &Client<'_>, trace: &mut Trace) -> String {
    let from_category = client
        .category
        .and_then(|c| config.categories.get(c))
        .and_then(|c| c.channel.clone());
    let mut current = if let Some(ch) = from_category {
        trace.note(|| format!("source channel {ch} (set by the category)"));
        ch
    } else if let Some(ch) = config.service(client.service).channel.clone() {
        trace.note(|| {
            format!(
                "source channel {ch} (the {} service's channel)",
                client.service
            )
        });
        ch
    } else if client.category == Some(INTERNAL) {
        trace.note(|| format!("source channel {CHANNEL_INTRANET} (built-in for INTERNAL clients)"));
        CHANNEL_INTRANET.to_string()
    } else {
        trace.note(|| {
            format!("source channel {CHANNEL_LOCAL} (built-in for clients that are not INTERNAL)")
        });
        CHANNEL_LOCAL.to_string()
    };
    let channel = config.channel(Some(&current));
    if client.tls {
        current = switch(
            &current,
            &channel,
            channel.tls_switch_target(),
            "TLS",
            "tlsswitchchannel",
            trace,
        );
    } else {
        trace.note(|| format!("no TLS: stays on {current}"));
    }
    match client.auth_user {
        Some(user) => {
            let channel = config.channel(Some(&current));
            let step = format!("authenticated as {user}");
            current = switch(
                &current,
                &channel,
                channel.sasl_switch_target(),
                &step,
                "saslswitchchannel",
                trace,
            );
        }
        None => trace.note(|| format!("not authenticated: stays on {current}")),
    }
    current
}

/// One possible switch from `current`; returns the channel the session is on after it.
fn switch(
    current: &str,
    channel: &Channel,
    target: Option<&str>,
    event: &str,
    keyword: &str,
    trace: &mut Trace,
) -> String {
    match target {
        None => {
            trace.note(|| format!("{event}: {current} names no {keyword}: stays on {current}"));
            current.to_string()
        }
        Some(to) if !channel.switching_allowed() => {
            trace.note(|| {
                format!("{event}: {current} says noswitchchannel: stays on {current} (not {to})")
            });
            current.to_string()
        }
        Some(to) => {
            trace.note(|| format!("{event}: switched from {current} to {to} ({keyword})"));
            to.to_string()
        }
    }
}

/// The destination channel of a route, with a line saying why.
fn destination_channel(route: &Route) -> (String, &'static str) {
    match (&route.channel, &route.next_hop) {
        (Some(ch), _) => (ch.clone(), "set by the route"),
        (None, Some(NextHop::Relay(_))) => (
            CHANNEL_INTERNAL.to_string(),
            "built-in for routes to internal relays",
        ),
        (None, _) => (
            CHANNEL_LOCAL.to_string(),
            "built-in for routes that leave the organisation",
        ),
    }
}

/// `550 5.7.1 <rcpt>: Relay access denied`.
pub fn relay_denied(rcpt: &str) -> Reply {
    Reply::new(550, "5.7.1", format!("<{rcpt}>: Relay access denied"))
}

/// The reply of a `deny "TEXT"` rule: `550 TEXT`, with the text's leading enhanced code
/// (class 5 or 4, which makes it 450) or else `5.7.1`.
pub fn deny_reply(text: &str) -> Reply {
    if let Some((first, rest)) = text.split_once(' ')
        && let Some(code) = Enhanced::parse(first).filter(|e| e.class != 2)
    {
        let rest = rest.trim_start_matches([' ', '\t']);
        return Reply {
            code: if code.class == 4 { 450 } else { 550 },
            enhanced: Some(code),
            lines: vec![if rest.is_empty() {
                first.to_string()
            } else {
                rest.to_string()
            }],
        };
    }
    Reply::new(550, "5.7.1", text)
}

/// Why `rule` does not match, or `None` when it does.
fn mismatch(
    config: &Config,
    rule: &RelayRule,
    source: &str,
    destination: &str,
    check: &RcptCheck<'_>,
) -> Option<String> {
    // A rule naming a channel that exists nowhere is most likely a typing error.
    let unknown = |ch: &str| {
        if config.has_channel(ch) {
            String::new()
        } else {
            format!("; {ch} is neither configured nor built in")
        }
    };
    if let Some(s) = rule.source.as_deref().filter(|s| *s != source) {
        return Some(format!("source channel is {source}, not {s}{}", unknown(s)));
    }
    if let Some(p) = rule.from.as_ref().filter(|p| !p.matches(check.mail_from)) {
        return Some(format!("sender <{}> does not match {p}", check.mail_from));
    }
    if let Some(d) = rule.destination.as_deref().filter(|d| *d != destination) {
        return Some(format!(
            "destination channel is {destination}, not {d}{}",
            unknown(d)
        ));
    }
    let rcpt = check.rcpt.to_string();
    if let Some(p) = rule.to.as_ref().filter(|p| !p.matches(&rcpt)) {
        return Some(format!("recipient <{rcpt}> does not match {p}"));
    }
    None
}

/// Decides one recipient (see the module documentation for the order of the steps).
pub fn decide(config: &Config, client: &Client<'_>, check: &RcptCheck<'_>) -> Decision {
    let mut trace = Trace::recording();
    let verdict = decide_into(config, client, check, &mut trace);
    trace.note(|| match &verdict {
        Verdict::Allow(_) => "decision: 250 2.1.5 Ok".to_string(),
        Verdict::Deny(r) => format!("decision: {}", r.one_line()),
    });
    Decision {
        verdict,
        trace: trace.into_lines(),
    }
}

/// [`decide`] without the trace: the same verdict, with none of the lines formatted.
/// Sessions decide every RCPT this way.
pub fn verdict(config: &Config, client: &Client<'_>, check: &RcptCheck<'_>) -> Verdict {
    decide_into(config, client, check, &mut Trace::off())
}

/// The steps of a decision, one human-readable line each: kept when someone will read
/// them (`explain`, the debug log), and not even formatted otherwise.
#[derive(Debug)]
pub struct Trace(Option<Vec<String>>);

impl Trace {
    pub fn recording() -> Trace {
        Trace(Some(Vec::new()))
    }

    pub fn off() -> Trace {
        Trace(None)
    }

    /// Adds the line `line` makes, when the trace is kept.
    pub fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(lines) = &mut self.0 {
            lines.push(line());
        }
    }

    /// The lines noted (none when the trace was off).
    pub fn into_lines(self) -> Vec<String> {
        self.0.unwrap_or_default()
    }
}

fn decide_into(
    config: &Config,
    client: &Client<'_>,
    check: &RcptCheck<'_>,
    trace: &mut Trace,
) -> Verdict {
    let rcpt = check.rcpt.to_string();
    trace.note(|| match client.category {
        Some(c) => format!("category {c}"),
        None => "no category (no classify rule matched): treated as external".to_string(),
    });
    trace.note(|| {
        let (ruleset, why) = ruleset_for(config, client.category);
        format!("{why}: {}", describe_ruleset(&ruleset))
    });
    let source = source_channel(config, client, trace);
    let who = || match (client.category, client.auth_user) {
        (_, Some(user)) => format!("the client authenticated as {user}"),
        (Some(INTERNAL), None) => "the client is INTERNAL".to_string(),
        _ => String::new(),
    };
    trace.note(|| format!("sender <{}>, recipient <{rcpt}>", check.mail_from));

    if client.is_trusted() {
        trace.note(|| format!("address form not checked: {}", who()));
    } else if let Some(reason) = smuggles_route(check.rcpt, check.had_source_route) {
        trace.note(|| format!(
            "refused: the recipient hides a route ({reason}); an unauthenticated client that is not INTERNAL never relays such addresses"
        ));
        return Verdict::Deny(relay_denied(&rcpt));
    }

    let routed = route::route(config, client.our_addresses, check.rcpt);
    let target = match &routed {
        Ok(r) => &r.target,
        Err(e) => &e.target,
    };
    match target {
        Target::Domain => {}
        Target::Postmaster => {
            trace.note(|| "no domain: a bare postmaster is our own (RFC 5321 §4.5.1)".to_string());
        }
        Target::OurLiteral(ip) => {
            trace.note(|| {
                format!(
                    "[{ip}] is one of our addresses: mail for our host {}",
                    config.system.host_name
                )
            });
            if !client.is_trusted() && !check.rcpt.is_postmaster() {
                trace.note(|| {
                    "refused: at our own address literal only postmaster is taken from a client that is neither INTERNAL nor authenticated"
                        .to_string()
                });
                return Verdict::Deny(relay_denied(&rcpt));
            }
        }
        Target::ForeignLiteral(ip) => {
            if !client.is_trusted() {
                trace.note(|| {
                    format!("refused: [{ip}] is an address literal for a host that is not ours")
                });
                return Verdict::Deny(relay_denied(&rcpt));
            }
            trace
                .note(|| format!("[{ip}] is another host's address: only the * route can take it"));
        }
    }
    let routed = match routed {
        Ok(r) => r,
        Err(e) => {
            trace.note(|| format!("no route for {}", e.domain));
            return Verdict::Deny(if client.is_trusted() {
                Reply::new(
                    550,
                    "5.4.4",
                    format!("<{rcpt}>: Recipient address rejected: no route to domain"),
                )
            } else {
                relay_denied(&rcpt)
            });
        }
    };
    // INVARIANT: `route::route` returns a pattern that is a key of `config.routes`.
    let Some(route) = routed.route(config) else {
        return Verdict::Deny(relay_denied(&rcpt));
    };
    let (destination, why) = destination_channel(route);
    trace.note(|| {
        format!(
            "{}; destination channel {destination} ({why})",
            route::describe(config, &routed)
        )
    });

    // RFC 5321 §4.5.1: every server takes mail for its postmaster, whatever the rules say.
    let ours_postmaster = route::is_our_postmaster(config, client.our_addresses, check.rcpt);
    if ours_postmaster || (check.rcpt.is_postmaster() && route.is_internal_relay()) {
        trace.note(|| {
            format!(
                "allowed: the postmaster of {} is always accepted (RFC 5321 §4.5.1)",
                if ours_postmaster {
                    config.system.host_name.as_str()
                } else {
                    routed.domain.as_str()
                }
            )
        });
        return Verdict::Allow(routed);
    }

    if config.relay_rules.is_empty() {
        trace.note(|| "no relay rules configured".to_string());
    }
    for (number, rule) in &config.relay_rules {
        let text = || {
            crate::proto::config::text::entry_text(
                config,
                "relay-rule",
                &crate::proto::config::schema::Key::Number(*number),
            )
            .unwrap_or_default()
        };
        match mismatch(config, rule, &source, &destination, check) {
            Some(why) => trace.note(|| format!("{}: no match ({why})", text())),
            None => {
                trace.note(|| format!("{}: matches", text()));
                return match &rule.action {
                    Some(RelayAction::Allow) => Verdict::Allow(routed),
                    Some(RelayAction::Deny(text)) => Verdict::Deny(deny_reply(text)),
                    // A rule without an action never passes the commit checks.
                    None => continue,
                };
            }
        }
    }

    if route.is_internal_relay() && client.service == ServiceName::Outbound && !client.is_trusted()
    {
        // SPEC §1: the outbound service faces the inside; mail for our domains from
        // anyone else comes in by the inbound service, with its checks.
        trace.note(|| {
            "no relay rule matched: refused, the outbound service takes mail only from INTERNAL clients and authenticated users"
                .to_string()
        });
        Verdict::Deny(Reply::new(
            530,
            "5.7.0",
            format!("<{rcpt}>: Authentication required"),
        ))
    } else if route.is_internal_relay() {
        trace.note(|| {
            format!(
                "no relay rule matched: allowed, {} is ours (routed to an internal relay)",
                routed.domain
            )
        });
        Verdict::Allow(routed)
    } else if client.is_trusted() {
        trace.note(|| format!("no relay rule matched: allowed, {}", who()));
        Verdict::Allow(routed)
    } else {
        trace.note(|| {
            "no relay rule matched: refused, a client that is neither INTERNAL nor authenticated may only send to our own domains"
                .to_string()
        });
        Verdict::Deny(relay_denied(&rcpt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::config::text::parse_into;
    use crate::proto::config::{Ruleset, host_default};
    use crate::proto::sasl::MechanismName;

    const OURS: &[IpAddr] = &[IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)];

    /// Who is sending, for the tables.
    #[derive(Clone, Copy, Debug)]
    enum Who {
        External,
        Unclassified,
        Authenticated,
        Internal,
    }

    fn client(who: Who, tls: bool) -> Client<'static> {
        Client {
            service: ServiceName::Inbound,
            category: match who {
                Who::External | Who::Authenticated => Some("EXTERNAL"),
                Who::Unclassified => None,
                Who::Internal => Some(INTERNAL),
            },
            tls,
            auth_user: matches!(who, Who::Authenticated).then_some("alice"),
            our_addresses: OURS,
        }
    }

    /// A recipient as the session core hands it over.
    fn rcpt(text: &str) -> Recipient {
        Recipient::parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}"))
    }

    #[test]
    fn a_trace_that_is_off_formats_nothing() {
        let mut off = Trace::off();
        off.note(|| unreachable!("an off trace never makes its lines"));
        assert!(off.into_lines().is_empty());
        let mut on = Trace::recording();
        on.note(|| "one".to_string());
        on.note(|| "two".to_string());
        assert_eq!(on.into_lines(), ["one", "two"]);
    }

    fn reply_of(
        config: &Config,
        who: Who,
        tls: bool,
        rcpt_text: &str,
        source_route: bool,
    ) -> String {
        let rcpt = rcpt(rcpt_text);
        let check = RcptCheck {
            mail_from: "sender@example.net",
            rcpt: &rcpt,
            had_source_route: source_route,
        };
        let d = decide(config, &client(who, tls), &check);
        assert_eq!(
            d.trace.last(),
            Some(&format!("decision: {}", d.reply().one_line()))
        );
        // Sessions decide without the trace: always the same verdict.
        assert_eq!(verdict(config, &client(who, tls), &check), d.verdict);
        d.reply().one_line()
    }

    fn with(text: &str) -> Config {
        let mut c = host_default();
        parse_into(&mut c, text).unwrap();
        c
    }

    const OK: &str = "250 2.1.5 Ok";

    #[test]
    fn the_outbound_service_takes_our_domains_only_from_inside_or_authenticated() {
        let config = host_default();
        let rcpt = rcpt("user@example.com");
        let check = RcptCheck {
            mail_from: "sender@example.net",
            rcpt: &rcpt,
            had_source_route: false,
        };
        for (who, answer) in [
            (
                Who::External,
                "530 5.7.0 <user@example.com>: Authentication required",
            ),
            (
                Who::Unclassified,
                "530 5.7.0 <user@example.com>: Authentication required",
            ),
            (Who::Internal, OK),
            (Who::Authenticated, OK),
        ] {
            let outbound = Client {
                service: ServiceName::Outbound,
                ..client(who, false)
            };
            let d = decide(&config, &outbound, &check);
            assert_eq!(d.reply().one_line(), answer, "{who:?}");
            // The inbound service takes it from anyone.
            assert_eq!(reply_of(&config, who, false, "user@example.com", false), OK);
        }
    }

    #[test]
    fn smuggled_routes_relay_only_for_trusted_clients() {
        let config = host_default();
        let forms: &[(&str, bool)] = &[
            ("user%example.org@example.com", false),
            ("user@example.com", true),
            ("example.org!user@example.com", false),
            ("\"user@example.org\"@example.com", false),
            ("user@[192.0.2.1]", false),
            ("user@[127.0.0.1]", false),
            ("\"postmaster@example.org\"@[127.0.0.1]", false),
            ("user@[IPv6:2001:db8::1]", false),
        ];
        for &(rcpt, route) in forms {
            for who in [Who::External, Who::Unclassified] {
                for tls in [false, true] {
                    assert_eq!(
                        reply_of(&config, who, tls, rcpt, route),
                        format!("550 5.7.1 <{rcpt}>: Relay access denied"),
                        "{rcpt} {who:?}"
                    );
                }
            }
            for who in [Who::Authenticated, Who::Internal] {
                assert_eq!(
                    reply_of(&config, who, true, rcpt, route),
                    OK,
                    "{rcpt} {who:?}"
                );
            }
        }
        // Whatever the rules say: a rule that allows everything opens plain relaying (the
        // administrator asked for it) but not smuggled routes.
        let open = with("set relay-rule 1 allow\n");
        assert_eq!(
            reply_of(&open, Who::External, false, "a@example.org", false),
            OK
        );
        for &(rcpt, route) in forms {
            assert_eq!(
                reply_of(&open, Who::External, false, rcpt, route),
                format!("550 5.7.1 <{rcpt}>: Relay access denied"),
                "{rcpt}"
            );
        }
    }

    #[test]
    fn foreign_recipients_relay_only_for_trusted_clients() {
        let config = host_default();
        for rcpt in [
            "user@example.org",
            "USER@Example.Org",
            "user@mail.example.net",
        ] {
            for who in [Who::External, Who::Unclassified] {
                assert_eq!(
                    reply_of(&config, who, false, rcpt, false),
                    "550 5.7.1 SMTP relaying not permitted",
                    "{rcpt}"
                );
            }
            assert_eq!(reply_of(&config, Who::Authenticated, true, rcpt, false), OK);
            assert_eq!(
                reply_of(&config, Who::Authenticated, false, rcpt, false),
                OK
            );
            assert_eq!(reply_of(&config, Who::Internal, false, rcpt, false), OK);
        }
    }

    #[test]
    fn our_domains_are_open_to_everyone() {
        let config = host_default();
        for rcpt in [
            "user@example.com",
            "User@Sub.Example.COM",
            "postmaster",
            "postmaster@gw.example.com",
            "postmaster@[127.0.0.1]",
            "PostMaster@[IPv6:::ffff:127.0.0.1]",
        ] {
            for who in [
                Who::External,
                Who::Unclassified,
                Who::Authenticated,
                Who::Internal,
            ] {
                assert_eq!(
                    reply_of(&config, who, false, rcpt, false),
                    OK,
                    "{rcpt} {who:?}"
                );
            }
        }
        let d = decide(
            &config,
            &client(Who::External, false),
            &RcptCheck {
                mail_from: "",
                rcpt: &rcpt("user@example.com"),
                had_source_route: false,
            },
        );
        let Verdict::Allow(routed) = d.verdict else {
            panic!("{d:?}")
        };
        assert_eq!(
            routed.pattern,
            crate::proto::config::DomainPattern::Exact("example.com".into())
        );
    }

    #[test]
    fn the_postmaster_is_always_accepted_whatever_the_rules_say() {
        // Every relay refused by a rule, and the host name routed by `*` to a smarthost.
        let config = with(
            "set system host-name gw.example.net\n\
             set route * smarthost [192.0.2.99]:25\n\
             set relay-rule 1 deny \"5.7.1 nothing here\"\n\
             set system postmaster hostmaster@example.com\n",
        );
        for text in [
            "postmaster",
            "PostMaster@gw.example.net",
            "postmaster@[127.0.0.1]",
            "postmaster@example.com",
            "postmaster@sub.example.com",
        ] {
            for who in [Who::External, Who::Unclassified] {
                assert_eq!(
                    reply_of(&config, who, false, text, false),
                    OK,
                    "{text} {who:?}"
                );
            }
        }
        // Our postmaster is delivered to the configured address, by its route.
        let d = decide(
            &config,
            &client(Who::External, false),
            &RcptCheck {
                mail_from: "",
                rcpt: &rcpt("postmaster"),
                had_source_route: false,
            },
        );
        let Verdict::Allow(routed) = d.verdict else {
            panic!("{:#?}", d.trace)
        };
        assert_eq!(routed.address, "hostmaster@example.com");
        assert!(
            d.trace
                .iter()
                .any(|t| t.contains("is always accepted (RFC 5321 §4.5.1)"))
        );
        // Another domain's postmaster relays no more than any other address.
        assert_eq!(
            reply_of(
                &config,
                Who::External,
                false,
                "postmaster@example.org",
                false
            ),
            "550 5.7.1 nothing here"
        );
        // Nor does a postmaster with a smuggled route.
        assert!(
            reply_of(
                &config,
                Who::External,
                false,
                "postmaster%evil.test@example.com",
                false
            )
            .starts_with("550")
        );
    }

    #[test]
    fn our_own_literal_is_our_host_and_never_reaches_the_any_route() {
        // The host name sits under a routed domain, and `*` goes to a smarthost.
        let config = with(
            "set route * smarthost [192.0.2.99]:25
",
        );
        for who in [Who::External, Who::Unclassified] {
            for text in ["bob@[127.0.0.1]", "bob@[IPv6:::ffff:127.0.0.1]"] {
                assert_eq!(
                    reply_of(&config, who, false, text, false),
                    format!("550 5.7.1 <{text}>: Relay access denied"),
                    "{text} {who:?}"
                );
            }
        }
        for who in [
            Who::External,
            Who::Unclassified,
            Who::Internal,
            Who::Authenticated,
        ] {
            let d = decide(
                &config,
                &client(who, false),
                &RcptCheck {
                    mail_from: "",
                    rcpt: &rcpt("postmaster@[127.0.0.1]"),
                    had_source_route: false,
                },
            );
            let Verdict::Allow(routed) = d.verdict else {
                panic!("{who:?}: {:#?}", d.trace)
            };
            assert_eq!(
                routed.pattern,
                crate::proto::config::DomainPattern::Suffix("example.com".into())
            );
            assert_eq!(routed.address, "postmaster@gw.example.com");
        }
        for who in [Who::Internal, Who::Authenticated] {
            let d = decide(
                &config,
                &client(who, false),
                &RcptCheck {
                    mail_from: "",
                    rcpt: &rcpt("bob@[127.0.0.1]"),
                    had_source_route: false,
                },
            );
            let Verdict::Allow(routed) = d.verdict else {
                panic!("{who:?}: {:#?}", d.trace)
            };
            assert_eq!(routed.address, "bob@gw.example.com", "{who:?}");
            assert_ne!(routed.pattern, crate::proto::config::DomainPattern::Any);
        }
    }

    #[test]
    fn the_factory_default_is_closed() {
        let factory = Config::default();
        for who in [Who::External, Who::Unclassified] {
            assert_eq!(
                reply_of(&factory, who, false, "user@example.org", false),
                "550 5.7.1 <user@example.org>: Relay access denied"
            );
        }
        // Even with a route to the internet and no relay rule at all, the baseline holds.
        let mut open_route = Config::default();
        parse_into(&mut open_route, "set route * mx\n").unwrap();
        assert_eq!(
            reply_of(&open_route, Who::External, true, "user@example.org", false),
            "550 5.7.1 <user@example.org>: Relay access denied"
        );
        assert_eq!(
            reply_of(&open_route, Who::Internal, false, "user@example.org", false),
            OK
        );
        assert_eq!(
            reply_of(&factory, Who::Internal, false, "user@example.org", false),
            "550 5.4.4 <user@example.org>: Recipient address rejected: no route to domain"
        );
        // Renaming the channels does not open the relay either.
        let renamed = with(
            "set route * channel tcp_out\n\
             set service inbound channel tcp_in\n",
        );
        assert_eq!(
            reply_of(&renamed, Who::External, false, "user@example.org", false),
            "550 5.7.1 <user@example.org>: Relay access denied"
        );
        assert_eq!(
            reply_of(&renamed, Who::External, false, "user@example.com", false),
            OK
        );
    }

    #[test]
    fn relay_rules_are_first_match_by_number() {
        let partner = "set relay-rule 5 source tcp_local to *@PARTNER.example allow\n";
        let config = with(partner);
        assert_eq!(
            reply_of(&config, Who::External, false, "a@partner.example", false),
            OK
        );
        assert_eq!(
            reply_of(&config, Who::External, false, "a@other.example", false),
            "550 5.7.1 SMTP relaying not permitted"
        );
        // The same rule after the deny rule never gets a say.
        let config = with(&partner.replace("relay-rule 5", "relay-rule 11"));
        assert_eq!(
            reply_of(&config, Who::External, false, "a@partner.example", false),
            "550 5.7.1 SMTP relaying not permitted"
        );
        // Replacing rule 10 replaces it.
        let config = with("set relay-rule 10 source tcp_local destination tcp_local deny \"no\"\n");
        assert_eq!(
            reply_of(&config, Who::External, false, "a@other.example", false),
            "550 5.7.1 no"
        );
    }

    #[test]
    fn relay_rules_match_senders_recipients_and_channels() {
        let config = with(
            "set relay-rule 1 from *@*.bad.example deny \"5.7.25 Sender refused\"\n\
             set relay-rule 2 destination tcp_internal to ceo@* deny \"4.7.1 Try again later\"\n\
             set relay-rule 3 source tcp_intranet to *@blocked.example deny \"no mail there\"\n",
        );
        let check = |who: Who, from: &str, to: &str| {
            decide(
                &config,
                &client(who, false),
                &RcptCheck {
                    mail_from: from,
                    rcpt: &rcpt(to),
                    had_source_route: false,
                },
            )
            .reply()
            .one_line()
        };
        assert_eq!(
            check(Who::Internal, "x@mail.BAD.example", "a@example.com"),
            "550 5.7.25 Sender refused"
        );
        assert_eq!(check(Who::Internal, "x@bad.example", "a@example.com"), OK);
        assert_eq!(check(Who::Internal, "", "a@example.com"), OK);
        assert_eq!(
            check(Who::External, "x@example.net", "CEO@example.com"),
            "450 4.7.1 Try again later"
        );
        assert_eq!(check(Who::Internal, "x@example.net", "ceo@example.org"), OK);
        assert_eq!(
            check(Who::Internal, "x@example.net", "a@blocked.example"),
            "550 5.7.1 no mail there"
        );
        assert_eq!(
            check(Who::Authenticated, "x@example.net", "a@blocked.example"),
            OK
        );
    }

    #[test]
    fn a_rule_on_an_unknown_channel_is_pointed_out() {
        let config = with("set relay-rule 5 source tcp_lcoal deny \"x\"\n");
        let d = decide(
            &config,
            &client(Who::External, false),
            &RcptCheck {
                mail_from: "",
                rcpt: &rcpt("a@example.org"),
                had_source_route: false,
            },
        );
        assert!(d.trace.contains(
            &"relay-rule 5 source tcp_lcoal deny \"x\": no match (source channel is tcp_local, not tcp_lcoal; tcp_lcoal is neither configured nor built in)"
                .to_string()
        ), "{:#?}", d.trace);
    }

    #[test]
    fn deny_texts_become_replies() {
        let cases = [
            (
                "5.7.1 SMTP relaying not permitted",
                "550 5.7.1 SMTP relaying not permitted",
            ),
            ("no relaying here", "550 5.7.1 no relaying here"),
            ("5.7.26 Unauthenticated", "550 5.7.26 Unauthenticated"),
            ("4.7.0 later", "450 4.7.0 later"),
            ("2.0.0 not a refusal", "550 5.7.1 2.0.0 not a refusal"),
            ("5.7.1", "550 5.7.1 5.7.1"),
            ("5.7.1  spaced", "550 5.7.1 spaced"),
            ("9.9.9 odd", "550 5.7.1 9.9.9 odd"),
        ];
        for (text, want) in cases {
            assert_eq!(deny_reply(text).one_line(), want, "{text}");
        }
    }

    const SWITCHING: &str = "set channel tcp_local keywords \"maytls maysaslserver tlsswitchchannel tcp_tls saslswitchchannel tcp_auth\"\n\
        set channel tcp_tls keywords \"maytls maysaslserver saslswitchchannel tcp_tls_auth\"\n\
        set relay-rule 20 source tcp_tls destination tcp_local deny \"5.7.1 TLS is not enough\"\n\
        set relay-rule 30 source tcp_tls_auth allow\n";

    fn source_of(config: &Config, who: Who, tls: bool) -> String {
        source_channel(config, &client(who, tls), &mut Trace::off())
    }

    #[test]
    fn tls_and_sasl_switches_change_which_rules_match() {
        let config = with(SWITCHING);
        assert_eq!(source_of(&config, Who::External, false), "tcp_local");
        assert_eq!(source_of(&config, Who::External, true), "tcp_tls");
        assert_eq!(source_of(&config, Who::Authenticated, false), "tcp_auth");
        assert_eq!(source_of(&config, Who::Authenticated, true), "tcp_tls_auth");
        let foreign = "a@example.org";
        assert_eq!(
            reply_of(&config, Who::External, false, foreign, false),
            "550 5.7.1 SMTP relaying not permitted"
        );
        assert_eq!(
            reply_of(&config, Who::External, true, foreign, false),
            "550 5.7.1 TLS is not enough"
        );
        assert_eq!(
            reply_of(&config, Who::Authenticated, true, foreign, false),
            OK
        );
        assert_eq!(
            reply_of(&config, Who::Authenticated, false, foreign, false),
            OK
        );
    }

    #[test]
    fn noswitchchannel_keeps_the_session_on_its_channel() {
        let config = with(&format!(
            "{SWITCHING}set channel tcp_local keywords \"maytls tlsswitchchannel tcp_tls saslswitchchannel tcp_auth noswitchchannel\"\n"
        ));
        assert_eq!(source_of(&config, Who::External, true), "tcp_local");
        assert_eq!(source_of(&config, Who::Authenticated, true), "tcp_local");
        // Still on tcp_local, the authenticated client meets the tcp_local deny rule.
        assert_eq!(
            reply_of(&config, Who::Authenticated, true, "a@example.org", false),
            "550 5.7.1 SMTP relaying not permitted"
        );
        let mut trace = Trace::recording();
        source_channel(&config, &client(Who::Authenticated, true), &mut trace);
        let trace = trace.into_lines();
        assert!(trace.contains(
            &"TLS: tcp_local says noswitchchannel: stays on tcp_local (not tcp_tls)".to_string()
        ));
        // allowswitchchannel after noswitchchannel wins back the switch.
        let config = with(&format!(
            "{SWITCHING}set channel tcp_local keywords \"tlsswitchchannel tcp_tls noswitchchannel allowswitchchannel\"\n"
        ));
        assert_eq!(source_of(&config, Who::External, true), "tcp_tls");
    }

    #[test]
    fn category_and_service_channels_come_before_the_built_in_ones() {
        let config = with("set service inbound channel tcp_door\n");
        assert_eq!(source_of(&config, Who::External, false), "tcp_door");
        assert_eq!(source_of(&config, Who::Internal, false), "tcp_door");
        let config = with(
            "set service inbound channel tcp_door\n\
             set category INTERNAL channel tcp_inside\n",
        );
        assert_eq!(source_of(&config, Who::Internal, false), "tcp_inside");
        assert_eq!(source_of(&config, Who::External, false), "tcp_door");
        assert_eq!(
            source_of(&host_default(), Who::Internal, false),
            "tcp_intranet"
        );
        assert_eq!(
            source_of(&host_default(), Who::Unclassified, false),
            "tcp_local"
        );
    }

    #[test]
    fn rulesets_decide_the_offered_mechanisms() {
        let names = |p: &[String]| p.join(" ");
        let factory = auth_policy(&Config::default(), Some("EXTERNAL"));
        assert_eq!(
            names(&factory.advertised),
            "PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256 EXTERNAL"
        );
        assert_eq!(
            names(&factory.needs_tls),
            "PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256",
            "AUTH only ever over TLS by default"
        );
        let config = with(
            "set ruleset EXTERNAL mechanisms \"SCRAM-SHA-256 plain\"\n\
             set ruleset EXTERNAL restrict PLAIN tls\n\
             set ruleset EXTERNAL restrict LOGIN tls\n\
             set ruleset DEFAULT mechanisms \"CRAM-MD5\"\n\
             set ruleset OPEN mechanisms \"PLAIN LOGIN\"\n\
             set category PARTNER ruleset OPEN\n\
             set category ODD ruleset MISSING\n",
        );
        let external = auth_policy(&config, Some("EXTERNAL"));
        assert_eq!(names(&external.advertised), "PLAIN SCRAM-SHA-256");
        assert_eq!(names(&external.needs_tls), "PLAIN");
        assert_eq!(
            names(&auth_policy(&config, Some(INTERNAL)).advertised),
            "CRAM-MD5"
        );
        assert_eq!(names(&auth_policy(&config, None).advertised), "CRAM-MD5");
        let partner = auth_policy(&config, Some("PARTNER"));
        assert_eq!(names(&partner.advertised), "PLAIN LOGIN");
        assert!(partner.needs_tls.is_empty());
        let (odd, why) = ruleset_for(&config, Some("ODD"));
        assert_eq!(odd, Ruleset::factory());
        assert!(
            why.contains("MISSING is named by the category but not defined"),
            "{why}"
        );
        assert!(Ruleset::factory().needs_tls.contains(MechanismName::Login));
    }

    #[test]
    fn address_patterns_glob_without_case() {
        let p = |s: &str| crate::proto::config::AddressPattern::new(s);
        assert!(p("*@example.com").matches("User@Example.COM"));
        assert!(!p("*@example.com").matches("user@example.com.evil"));
        assert!(p("*@*.example.com").matches("a@b.c.example.com"));
        assert!(!p("*@*.example.com").matches("a@example.com"));
        assert!(p("a*b*c").matches("abc"));
        assert!(p("a*b*c").matches("aXbYbZc"));
        assert!(!p("a*b*c").matches("aXbYbZcd"));
        assert!(p("**").matches(""));
        assert!(!p("x").matches(""));
        assert!(p("postmaster").matches("PostMaster"));
        // A long pathological case finishes (bounded work).
        let long = "a".repeat(256);
        assert!(!p(&format!("{}b", "*a".repeat(100))).matches(&long));
    }

    #[test]
    fn random_addresses_never_panic_and_untrusted_smuggling_never_passes() {
        let config = with(SWITCHING);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"ab.@%!\"[]:\\*1-9";
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 24) as usize;
            let mut y = x;
            let rcpt: String = (0..len)
                .map(|_| {
                    y = y.rotate_left(5) ^ 0x5851_f42d;
                    alphabet[(y % alphabet.len() as u64) as usize] as char
                })
                .collect();
            let Ok(parsed) = Recipient::parse(&rcpt) else {
                continue;
            };
            for who in [Who::External, Who::Authenticated, Who::Internal] {
                let d = decide(
                    &config,
                    &client(who, x % 2 == 0),
                    &RcptCheck {
                        mail_from: &rcpt,
                        rcpt: &parsed,
                        had_source_route: x % 5 == 0,
                    },
                );
                if matches!(who, Who::External) && smuggles_route(&parsed, x % 5 == 0).is_some() {
                    assert!(matches!(d.verdict, Verdict::Deny(_)), "{rcpt}");
                }
            }
        }
    }

    #[test]
    fn odd_recipients_never_reach_the_policy() {
        for text in [
            "",
            "@",
            "@@",
            "\"",
            "a@",
            "a@[",
            "a@[]",
            "a@.",
            "a@..",
            "\"@\"@",
            "a@b@c",
            "a@[x400:1]",
            "a@example.com.",
        ] {
            assert!(Recipient::parse(text).is_err(), "{text}");
        }
        let config = host_default();
        for who in [Who::External, Who::Internal] {
            let _ = reply_of(&config, who, false, "é@é", false);
        }
    }
}
