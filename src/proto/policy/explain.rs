//! `drawbridge explain`: why a given client's mail to a given recipient is accepted or
//! refused, step by step, from the configuration alone.
//!
//! The input is what an administrator knows from a complaint or a log line: the client's
//! address, whether it used TLS, who it authenticated as, the sender and the recipient.
//! The output is the list of steps the policy takes and the reply the client would get.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::{Client, RcptCheck, Verdict, auth_policy, decide, route};
use crate::proto::config::{Config, ServiceName};
use crate::proto::smtp::address::{Path, Recipient};
use crate::proto::smtp::command::CommandError;

/// The case to explain.
#[derive(Clone, Copy, Debug)]
pub struct ExplainInput<'a> {
    pub from_ip: IpAddr,
    pub tls: bool,
    pub auth_user: Option<&'a str>,
    /// The envelope sender, with or without angle brackets; empty for the null sender.
    pub mail: &'a str,
    /// The recipient, with or without angle brackets, possibly with a source route.
    pub rcpt: &'a str,
    pub service: ServiceName,
    /// This host's addresses: a literal naming one of them is our host.
    pub our_addresses: &'a [IpAddr],
}

/// The steps, one line each, and the reply: `250 2.1.5 Ok` or the refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub steps: Vec<String>,
    pub decision: String,
}

/// The port assumed for a service that listens nowhere: SMTP's, 25.
const ASSUMED_PORT: u16 = 25;

/// Explains one recipient of one client.
pub fn explain(config: &Config, input: ExplainInput<'_>) -> Explanation {
    let mut steps = Vec::new();
    let service = config.service(input.service);
    let local = match (
        input.tls,
        service.tls_listen.first(),
        service.listen.first(),
    ) {
        (true, Some(a), _) | (_, _, Some(a)) | (_, Some(a), None) => *a,
        (_, None, None) => {
            steps.push(format!(
                "the {} service listens nowhere: assuming 0.0.0.0:{ASSUMED_PORT}",
                input.service
            ));
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), ASSUMED_PORT)
        }
    };
    // The client's port is unknown; a rule on remote-port cannot be judged.
    let remote = SocketAddr::new(input.from_ip, 0);
    steps.push(format!(
        "client {} connects to the {} service at {local}",
        input.from_ip, input.service
    ));
    // Behind a load balancer the client is the one its PROXY header names, and that is
    // the address to explain; the balancer's own address is served only for its own
    // connections.
    if service.expects_proxy_header(input.from_ip) {
        steps.push(format!(
            "note: {} is a load balancer (proxy-from): its connections begin with a PROXY header and are served as the client it names; as {} itself only its own (a LOCAL or UNKNOWN header, such as a health check)",
            input.from_ip, input.from_ip
        ));
    }
    let mut category = None;
    let mut matched = false;
    for (number, rule) in &config.classify {
        if rule.matches(local, remote) {
            matched = true;
            match &rule.action {
                None => continue,
                Some(crate::proto::config::ClassifyAction::Category(c)) => {
                    steps.push(format!("classify rule {number} matches: category {c}"));
                    category = Some(c.as_str());
                }
                Some(crate::proto::config::ClassifyAction::Deny(text)) => {
                    steps.push(format!(
                        "classify rule {number} matches: the connection is refused"
                    ));
                    return Explanation {
                        steps,
                        decision: format!("554 5.7.1 {text}"),
                    };
                }
            }
            break;
        }
    }
    if !config.offers_auth(input.service) {
        steps.push(format!(
            "the {} service offers no AUTH (set service {} auth yes turns it on){}",
            input.service,
            input.service,
            if input.auth_user.is_some() {
                ": this client cannot have authenticated"
            } else {
                ""
            }
        ));
    } else if input.auth_user.is_some() && !input.tls {
        let policy = auth_policy(config, category);
        let usable: Vec<&str> = policy
            .advertised
            .iter()
            .filter(|m| !policy.needs_tls.contains(m))
            .map(String::as_str)
            .collect();
        steps.push(if usable.is_empty() {
            "note: without TLS this client is offered no SASL mechanism, so it cannot have authenticated".to_string()
        } else {
            format!(
                "note: without TLS this client can authenticate only with {}",
                usable.join(" ")
            )
        });
    }
    let client = Client {
        service: input.service,
        category,
        tls: input.tls,
        auth_user: input.auth_user,
        our_addresses: input.our_addresses,
    };
    let Some((rcpt, had_source_route)) = parse_rcpt(input.rcpt) else {
        let reply = CommandError::BadRecipient.reply().one_line();
        steps.push(format!(
            "the recipient {} is not an RFC 5321 address: RCPT is refused",
            input.rcpt.trim()
        ));
        steps.push(format!("decision: {reply}"));
        return Explanation {
            steps,
            decision: reply,
        };
    };
    let (mail, _) = strip_path(input.mail);
    let decision = decide(
        config,
        &client,
        &RcptCheck {
            mail_from: mail,
            rcpt: &rcpt,
            had_source_route,
        },
    );
    // The engine's first step names the category, which the classify step above has
    // said already when a rule matched.
    let skip = usize::from(matched);
    steps.extend(decision.trace.iter().skip(skip).cloned());
    // Where the mail goes, by the routing delivery uses, just before the decision.
    if let Verdict::Allow(routed) = &decision.verdict {
        let at = steps.len().saturating_sub(1);
        steps.insert(at, format!("delivery: {}", route::describe(config, routed)));
    }
    Explanation {
        steps,
        decision: decision.reply().one_line(),
    }
}

/// The recipient as the server core checks it: the path with its angle brackets (added
/// when missing), then the recipient; and whether it carried a source route.
fn parse_rcpt(text: &str) -> Option<(Recipient, bool)> {
    let text = text.trim();
    let bracketed = if text.starts_with('<') {
        text.to_string()
    } else {
        format!("<{text}>")
    };
    let (path, rest) = Path::parse_prefix(&bracketed).ok()?;
    if !rest.is_empty() {
        return None;
    }
    Some((Recipient::from_target(path.target)?, path.had_source_route))
}

/// An address as typed, without angle brackets and without a source route
/// (`@a,@b:user@c`); says whether there was one.
fn strip_path(text: &str) -> (&str, bool) {
    let text = text.trim();
    let text = text
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(text);
    if text.starts_with('@')
        && let Some((_, rest)) = text.split_once(':')
    {
        return (rest, true);
    }
    (text, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::config::host_default;

    const OURS: &[IpAddr] = &[IpAddr::V4(Ipv4Addr::LOCALHOST)];

    fn run(ip: &str, tls: bool, auth: Option<&str>, rcpt: &str) -> Explanation {
        explain(
            &host_default(),
            ExplainInput {
                from_ip: ip.parse().unwrap(),
                tls,
                auth_user: auth,
                mail: "<sender@example.net>",
                rcpt,
                service: ServiceName::Inbound,
                our_addresses: OURS,
            },
        )
    }

    #[test]
    fn a_refused_relay_attempt_is_explained() {
        let e = run("192.0.2.7", false, None, "<victim@example.org>");
        assert_eq!(e.decision, "550 5.7.1 SMTP relaying not permitted");
        let expected = [
            "client 192.0.2.7 connects to the inbound service at 127.0.0.1:2525",
            "classify rule 20 matches: category EXTERNAL",
            "the inbound service offers no AUTH (set service inbound auth yes turns it on)",
            "the factory ruleset: offers PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256 EXTERNAL; PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256 only with TLS",
            "source channel tcp_local (built-in for clients that are not INTERNAL)",
            "no TLS: stays on tcp_local",
            "not authenticated: stays on tcp_local",
            "sender <sender@example.net>, recipient <victim@example.org>",
            "route * for example.org: MX lookup; delivered to <victim@example.org>; destination channel tcp_local (built-in for routes that leave the organisation)",
            "relay-rule 10 source tcp_local destination tcp_local deny \"5.7.1 SMTP relaying not permitted\": matches",
            "decision: 550 5.7.1 SMTP relaying not permitted",
        ];
        assert_eq!(e.steps, expected);
    }

    #[test]
    fn a_load_balancers_own_address_is_noted() {
        let mut config = host_default();
        crate::proto::config::text::parse_into(
            &mut config,
            "set service inbound proxy-protocol yes\nset service inbound proxy-from 10.1.0.0/16\n",
        )
        .unwrap();
        let input = |ip: &'static str| ExplainInput {
            from_ip: ip.parse().unwrap(),
            tls: false,
            auth_user: None,
            mail: "<sender@example.net>",
            rcpt: "<victim@example.org>",
            service: ServiceName::Inbound,
            our_addresses: OURS,
        };
        let balancer = explain(&config, input("10.1.0.5"));
        assert_eq!(
            balancer.steps[1],
            "note: 10.1.0.5 is a load balancer (proxy-from): its connections begin with a PROXY header and are served as the client it names; as 10.1.0.5 itself only its own (a LOCAL or UNKNOWN header, such as a health check)"
        );
        // The client a header names is explained as any client: the same steps as
        // without a balancer.
        let client = explain(&config, input("192.0.2.7"));
        assert!(!client.steps.iter().any(|s| s.contains("proxy-from")));
        assert_eq!(
            client,
            run("192.0.2.7", false, None, "<victim@example.org>")
        );
    }

    #[test]
    fn an_accepted_authenticated_relay_is_explained() {
        let e = run("192.0.2.7", true, Some("alice"), "<friend@example.org>");
        assert_eq!(e.decision, "250 2.1.5 Ok");
        let expected = [
            "client 192.0.2.7 connects to the inbound service at 127.0.0.1:2525",
            "classify rule 20 matches: category EXTERNAL",
            "the inbound service offers no AUTH (set service inbound auth yes turns it on): this client cannot have authenticated",
            "the factory ruleset: offers PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256 EXTERNAL; PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256 only with TLS",
            "source channel tcp_local (built-in for clients that are not INTERNAL)",
            "TLS: tcp_local names no tlsswitchchannel: stays on tcp_local",
            "authenticated as alice: switched from tcp_local to tcp_auth (saslswitchchannel)",
            "sender <sender@example.net>, recipient <friend@example.org>",
            "address form not checked: the client authenticated as alice",
            "route * for example.org: MX lookup; delivered to <friend@example.org>; destination channel tcp_local (built-in for routes that leave the organisation)",
            "relay-rule 10 source tcp_local destination tcp_local deny \"5.7.1 SMTP relaying not permitted\": no match (source channel is tcp_auth, not tcp_local)",
            "no relay rule matched: allowed, the client authenticated as alice",
            "delivery: route * for example.org: MX lookup; delivered to <friend@example.org>",
            "decision: 250 2.1.5 Ok",
        ];
        assert_eq!(e.steps, expected);
    }

    #[test]
    fn smuggled_routes_and_notes_are_explained() {
        let e = run(
            "192.0.2.7",
            false,
            None,
            "<@relay.example.org:victim@example.com>",
        );
        assert_eq!(
            e.decision,
            "550 5.7.1 <victim@example.com>: Relay access denied"
        );
        assert!(
            e.steps
                .iter()
                .any(|s| s.starts_with("refused: the recipient hides a route (source route")),
            "{:#?}",
            e.steps
        );
        let mut with_auth = host_default();
        crate::proto::config::text::parse_into(
            &mut with_auth,
            "set service inbound auth yes\nset ruleset EXTERNAL restrict PLAIN tls\n",
        )
        .unwrap();
        let e = explain(
            &with_auth,
            ExplainInput {
                from_ip: "192.0.2.7".parse().unwrap(),
                tls: false,
                auth_user: Some("alice"),
                mail: "<sender@example.net>",
                rcpt: "friend@example.org",
                service: ServiceName::Inbound,
                our_addresses: OURS,
            },
        );
        assert!(
            e.steps.contains(
                &"note: without TLS this client can authenticate only with LOGIN CRAM-MD5 SCRAM-SHA-256 EXTERNAL"
                    .to_string()
            ),
            "{:#?}",
            e.steps
        );
        let e = run("127.0.0.1", false, None, "friend@example.org");
        assert_eq!(e.decision, "250 2.1.5 Ok");
        assert!(
            e.steps
                .contains(&"classify rule 10 matches: category INTERNAL".to_string())
        );
        assert!(
            e.steps.contains(
                &"source channel tcp_intranet (built-in for INTERNAL clients)".to_string()
            )
        );
    }

    #[test]
    fn an_unclassified_client_is_explained_with_the_factory_configuration() {
        let e = explain(
            &crate::proto::config::Config::default(),
            ExplainInput {
                from_ip: "192.0.2.7".parse().unwrap(),
                tls: false,
                auth_user: None,
                mail: "",
                rcpt: "a@example.org",
                service: ServiceName::Outbound,
                our_addresses: OURS,
            },
        );
        assert_eq!(e.decision, "550 5.7.1 <a@example.org>: Relay access denied");
        let expected = [
            "the outbound service listens nowhere: assuming 0.0.0.0:25",
            "client 192.0.2.7 connects to the outbound service at 0.0.0.0:25",
            "no category (no classify rule matched): treated as external",
            "the factory ruleset: offers PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256 EXTERNAL; PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256 only with TLS",
            "source channel tcp_local (built-in for clients that are not INTERNAL)",
            "no TLS: stays on tcp_local",
            "not authenticated: stays on tcp_local",
            "sender <>, recipient <a@example.org>",
            "no route for example.org",
            "decision: 550 5.7.1 <a@example.org>: Relay access denied",
        ];
        assert_eq!(e.steps, expected);
    }

    #[test]
    fn a_refused_connection_is_explained() {
        let mut config = host_default();
        crate::proto::config::text::parse_into(
            &mut config,
            "set classify 5 remote 198.51.100.0/24 deny \"go away\"\n",
        )
        .unwrap();
        let e = explain(
            &config,
            ExplainInput {
                from_ip: "198.51.100.9".parse().unwrap(),
                tls: false,
                auth_user: None,
                mail: "",
                rcpt: "a@example.com",
                service: ServiceName::Inbound,
                our_addresses: OURS,
            },
        );
        assert_eq!(e.decision, "554 5.7.1 go away");
        assert_eq!(
            e.steps.last().map(String::as_str),
            Some("classify rule 5 matches: the connection is refused")
        );
    }

    #[test]
    fn paths_lose_brackets_and_source_routes() {
        assert_eq!(strip_path("<a@b>"), ("a@b", false));
        assert_eq!(strip_path(" a@b "), ("a@b", false));
        assert_eq!(strip_path("<@x,@y:a@b>"), ("a@b", true));
        assert_eq!(strip_path("<>"), ("", false));
    }
}
