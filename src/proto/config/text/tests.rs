//! Tests of the text form: the host default, bad lines, merging, `delete`, printing,
//! round trips over generated models, completion, and hostile input.

use super::*;
use crate::proto::config::schema;
use crate::proto::config::{
    Cidr, ClassifyAction, ClassifyRule, DomainPattern, EhloKeywords, HOST_DEFAULT, INTERNAL,
    NextHop, RelayHost, Route, ServiceName, host_default,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A relay host given as an address literal.
fn lit(s: &str) -> RelayHost {
    RelayHost::Address(sa(s))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn cidr(s: &str) -> Cidr {
    let (a, p) = s.split_once('/').unwrap();
    Cidr::new(a.parse().unwrap(), p.parse().unwrap()).unwrap()
}

// ---- the host board's default -------------------------------------------------

#[test]
fn host_default_has_the_documented_facts() {
    let cfg = parse(HOST_DEFAULT).unwrap();
    assert_eq!(cfg, host_default());
    assert_eq!(cfg.system.host_name, "gw.example.com");
    assert_eq!(cfg.inbound.listen, [sa("127.0.0.1:2525")]);
    assert_eq!(cfg.outbound.listen, [sa("127.0.0.1:2587")]);
    let relay = NextHop::Relay(vec![lit("127.0.0.1:2526")]);
    let exact = &cfg.routes[&DomainPattern::Exact("example.com".into())];
    let suffix = &cfg.routes[&DomainPattern::Suffix("example.com".into())];
    assert_eq!(exact.next_hop, Some(relay.clone()));
    assert_eq!(suffix.next_hop, Some(relay.clone()));
    assert!(exact.is_internal_relay());
    let rules: Vec<_> = cfg.classify.values().collect();
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[0].remote, Some(cidr("127.0.0.0/8")));
    assert_eq!(
        rules[0].action,
        Some(ClassifyAction::Category(INTERNAL.into()))
    );
    assert_eq!(rules[1].remote, Some(cidr("0.0.0.0/0")));
    assert_eq!(
        rules[1].action,
        Some(ClassifyAction::Category("EXTERNAL".into()))
    );
    assert_eq!(rules[2].remote, Some(cidr("::/0")));
    assert_eq!(
        rules[2].action,
        Some(ClassifyAction::Category("EXTERNAL".into()))
    );
    let local = sa("127.0.0.1:2525");
    use crate::proto::config::Classification;
    assert_eq!(
        cfg.classify(local, sa("127.0.0.1:5000")),
        Classification::Category(INTERNAL)
    );
    assert_eq!(
        cfg.classify(local, sa("192.0.2.1:5000")),
        Classification::Category("EXTERNAL")
    );
    assert_eq!(
        cfg.classify(local, sa("[2001:db8::1]:5000")),
        Classification::Category("EXTERNAL")
    );
    assert_eq!(
        cfg.route_for("mail.example.com").unwrap().1.next_hop,
        Some(relay)
    );
    // Everything else goes out by MX: the outbound service's default route.
    assert_eq!(
        cfg.route_for("example.org").unwrap().1.next_hop,
        Some(NextHop::Mx)
    );
    // The relay rule of the seeds, on the built-in channels.
    let rule = &cfg.relay_rules[&10];
    assert_eq!(
        rule.source.as_deref(),
        Some(crate::proto::config::CHANNEL_LOCAL)
    );
    assert_eq!(
        rule.destination.as_deref(),
        Some(crate::proto::config::CHANNEL_LOCAL)
    );
    assert_eq!(
        rule.action,
        Some(crate::proto::config::RelayAction::Deny(
            "5.7.1 SMTP relaying not permitted".into()
        ))
    );
    assert_eq!(cfg.relay_rules.len(), 1);
    assert_eq!(parse(&print(&cfg)).unwrap(), cfg);
}

// ---- bad lines ------------------------------------------------------------------

#[test]
fn bad_lines_are_refused_with_line_number_and_reason() {
    let ok = "set system host-name gw.example.com\n";
    let cases: &[(&str, &str)] = &[
        (
            "sett system host-name x",
            "unknown keyword 'sett': expected one of set, delete",
        ),
        (
            "set sytem host-name x",
            "unknown keyword 'sytem' after 'set': expected one of system, service",
        ),
        (
            "set system",
            "incomplete statement 'set system': expected one of host-name, dns",
        ),
        (
            "set system host-name",
            "missing value after 'set system host-name': expected a host name",
        ),
        ("set system host-name gw_1", "'gw_1' is not a host name"),
        (
            "set system host-name a b",
            "unexpected 'b' after the complete statement 'set system host-name a'",
        ),
        (
            "set system host-name a # name",
            "(a comment must be on a line of its own)",
        ),
        (
            "set service sideways listen 1.2.3.4:25",
            "unknown keyword 'sideways' after 'set service': expected one of inbound, outbound",
        ),
        (
            "set service inbound max-conns 5",
            "unknown keyword 'max-conns' after 'set service inbound': expected one of listen, tls-listen, disable, certificate, auth",
        ),
        (
            "set service inbound",
            "incomplete statement 'set service inbound': expected one of listen, tls-listen",
        ),
        (
            "set service inbound max-connections",
            "missing value after 'set service inbound max-connections': expected a number from 1 to 65535",
        ),
        (
            "set service inbound max-connections 0",
            "'0' is out of range for max-connections: expected a number from 1 to 65535",
        ),
        (
            "set service inbound max-connections 65536",
            "'65536' is out of range for max-connections",
        ),
        (
            "set service inbound max-connections 99999999999999999999999",
            "is out of range for max-connections",
        ),
        (
            "set service inbound max-connections five",
            "'five' is not a number: expected a number from 1 to 65535",
        ),
        (
            "set service inbound max-connections -1",
            "'-1' is not a number",
        ),
        (
            "set service inbound max-connections-per-ip 0",
            "out of range for max-connections-per-ip",
        ),
        (
            "set service inbound idle-timeout abc",
            "'abc' is not a duration: expected a number with a unit s, m, h or d (e.g. 30s)",
        ),
        (
            "set service inbound idle-timeout 300",
            "'300' is not a duration",
        ),
        (
            "set service inbound idle-timeout 0s",
            "'0s' is out of range for idle-timeout: expected more than 0s",
        ),
        (
            "set system watchdog timeout 4s",
            "'4s' is out of range for timeout: expected 0s (off) or from 5s to 30m",
        ),
        (
            "set system watchdog timeout 31m",
            "'31m' is out of range for timeout: expected 0s (off) or from 5s to 30m",
        ),
        (
            "set system stop-grace 11m",
            "'11m' is out of range for stop-grace: expected at most 10m",
        ),
        (
            "set service inbound data-timeout 400d",
            "'400d' is too long: at most 365d",
        ),
        (
            "set service outbound max-session-time 0m",
            "out of range for max-session-time",
        ),
        (
            "set service outbound max-messages-per-session 0",
            "out of range for max-messages-per-session: expected a number of at least 1",
        ),
        (
            "set service outbound max-message-size 1023",
            "'1023' is out of range for max-message-size: expected at least 1024 bytes",
        ),
        (
            "set service outbound max-message-size 10x",
            "'10x' is not a size",
        ),
        (
            "set service inbound max-recipients 50",
            "'50' is out of range for max-recipients: RFC 5321 §4.5.3.1.8 requires accepting at least 100 recipients",
        ),
        (
            "set service inbound max-line-length 999",
            "RFC 5321 §4.5.3.1.6",
        ),
        (
            "set service inbound max-line-length 65537",
            "expected a number from 1000 to 65536",
        ),
        (
            "set service inbound error-limit 0",
            "out of range for error-limit",
        ),
        (
            "set service inbound greet-delay soon",
            "'soon' is not a duration",
        ),
        (
            "set service inbound ehlo-keywords \"SIZE XCLIENT\"",
            "'XCLIENT' is not an EHLO keyword: expected some of PIPELINING, SIZE",
        ),
        (
            "set service inbound ehlo-keywords \"SIZE",
            "unterminated quote: the '\"' at column 35 is never closed",
        ),
        (
            "set service inbound listen 1.2.3.4",
            "'1.2.3.4' is not a listen address: expected an address and port",
        ),
        ("set service inbound listen 1.2.3.4:0", "has port 0"),
        (
            "set classify 0 category X",
            "'0' is out of range for a classify rule number: expected a number from 1 to 65535",
        ),
        (
            "set classify 10 remote 10.0.0.0/33 category X",
            "'10.0.0.0/33' has a bad prefix length: expected /0 to /32",
        ),
        (
            "set classify 10 remote 10.0.0.0/8 remote 11.0.0.0/8 category X",
            "a setting is given twice in 'set classify 10 remote 10.0.0.0/8 remote'",
        ),
        (
            "set classify 10 category internal",
            "category names are upper case (write 'INTERNAL')",
        ),
        (
            "set classify 10 category X category Y",
            "a setting is given twice in 'set classify 10 category X category'",
        ),
        (
            "set service inbound max",
            "ambiguous keyword 'max' after 'set service inbound': it could be max-connections, max-connections-per-ip, max-session-time",
        ),
        (
            "set route example.com relay [10.0.0.1] bogus",
            "unexpected 'bogus' after the complete statement 'set route example.com relay [10.0.0.1]'",
        ),
        (
            "set ruleset EXTERNAL restrict PLAIN",
            "incomplete statement 'set ruleset EXTERNAL restrict PLAIN': expected 'tls'",
        ),
        (
            "set ruleset EXTERNAL restrict PLAIN ssl",
            "unknown keyword 'ssl' after 'set ruleset EXTERNAL restrict PLAIN': expected 'tls'",
        ),
        (
            "delete route nowhere.example",
            "nothing to delete: 'route nowhere.example' is not configured",
        ),
        (
            "delete system dns timeout",
            "nothing to delete: 'system dns timeout' is not configured",
        ),
        (
            "delete service inbound listen 10.9.9.9:25",
            "nothing to delete: 'service inbound listen 10.9.9.9:25' is not configured",
        ),
        (
            "delete",
            "incomplete statement 'delete': expected one of system, service",
        ),
        (
            "set classify 10 local-port 0 category X",
            "'0' is not a port",
        ),
        (
            "set classify 10 deny",
            "missing value after 'set classify 10 deny': expected a quoted reply text",
        ),
        (
            "set classify 10 deny \"bad \\q\"",
            "unknown escape '\\q' at column 27",
        ),
        (
            "set classify 10 deny \"x\"y",
            "text right after a closing quote at column 25",
        ),
        (
            "set classify 10 deny no\"x\"",
            "'\"' inside a word at column 24",
        ),
        (
            "set classify 10 deny \"\"",
            "is not a deny text: it is empty",
        ),
        (
            "set route *.example.com relay [10.0.0.1]",
            "write '.example.com' for the subdomains of example.com",
        ),
        (
            "set route example.com relay 10.0.0.1:25",
            "'10.0.0.1:25' is not a relay host: write an address in brackets, [10.0.0.1]:25",
        ),
        (
            "set route example.com smarthost smtp_1.example.com:587",
            "'smtp_1.example.com' is not a relay host name",
        ),
        (
            "set route example.com auth user \"two words\"",
            "'two words' is not a user name",
        ),
        (
            "set route example.com auth danger-cleartext maybe",
            "'maybe' is not yes or no",
        ),
        (
            "set route example.com relay [10.0.0.1]:25,",
            "has an empty entry",
        ),
        (
            "set route example.com relay",
            "missing value after 'set route example.com relay': expected a list of [address]:port",
        ),
        (
            "set route example.com direct",
            "unknown keyword 'direct' after 'set route example.com': expected one of relay, smarthost, mx, failover-timeout",
        ),
        ("set queue retry \"\"", "is not a retry schedule"),
        (
            "set queue retry \"5m 0s\"",
            "'0s' is too short for a retry step",
        ),
        ("set queue max-lifetime 0d", "out of range for max-lifetime"),
        (
            "set queue",
            "incomplete statement 'set queue': expected one of retry, max-lifetime",
        ),
        (
            "set system host-name a\u{1}b",
            "control character at column 23",
        ),
    ];
    let mut failures = Vec::new();
    for (line, fragment) in cases {
        let text = format!("# a comment\n{ok}\n{line}\n{ok}");
        match parse(&text) {
            Err(err) if err.line == 4 && err.message.contains(fragment) => {
                assert!(err.to_string().starts_with("line 4: "));
            }
            other => failures.push(format!("{line}\n  got:  {other:?}\n  want: {fragment}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn overlong_lines_and_words_are_refused_briefly() {
    let line = format!("set system host-name {}", "a".repeat(3000));
    let err = parse(&line).unwrap_err();
    assert_eq!(err.line, 1);
    assert!(err.message.contains("at most 2048 are accepted"), "{err}");
    let line = format!("set system host-name {}", "a".repeat(1000));
    let err = parse(&line).unwrap_err();
    assert!(err.message.len() < 200, "{err}");
    assert!(err.message.contains("…' is not a host name"), "{err}");
}

// ---- merging ----------------------------------------------------------------------

#[test]
fn parse_into_merges_onto_a_config() {
    let mut cfg = host_default();
    let before = cfg.clone();
    parse_into(
        &mut cfg,
        "set service inbound listen [::1]:2525\n\
         set service inbound listen 127.0.0.1:2525\n\
         set service inbound max-connections 42\n\
         set route example.com smarthost [192.0.2.1]\n\
         set route example.com concurrency 3\n\
         set classify 10 remote 10.0.0.0/8 category INTERNAL\n",
    )
    .unwrap();
    assert_eq!(cfg.inbound.listen, [sa("127.0.0.1:2525"), sa("[::1]:2525")]);
    assert_eq!(cfg.inbound.max_connections, 42);
    assert_eq!(cfg.outbound, before.outbound);
    let route = &cfg.routes[&DomainPattern::Exact("example.com".into())];
    assert_eq!(
        route.next_hop,
        Some(NextHop::Smarthost(vec![lit("192.0.2.1:25")]))
    );
    assert_eq!(route.concurrency, 3);
    assert_eq!(
        cfg.routes[&DomainPattern::Suffix("example.com".into())],
        before.routes[&DomainPattern::Suffix("example.com".into())]
    );
    assert_eq!(cfg.classify[&10].remote, Some(cidr("10.0.0.0/8")));
    assert_eq!(cfg.classify[&20], before.classify[&20]);
    assert_eq!(cfg.system, before.system);
}

#[test]
fn changing_the_next_hop_keeps_the_other_route_settings() {
    let cfg = parse(
        "set route .example.net relay [10.0.0.1]\n\
         set route .example.net avoid-time 0s\n\
         set route .example.net relay [10.0.0.2]:2525,[10.0.0.3]\n",
    )
    .unwrap();
    let route = &cfg.routes[&DomainPattern::Suffix("example.net".into())];
    assert_eq!(route.avoid_time, Duration::ZERO);
    assert_eq!(
        route.next_hop,
        Some(NextHop::Relay(vec![
            lit("10.0.0.2:2525"),
            lit("10.0.0.3:25")
        ]))
    );
}

#[test]
fn a_failing_text_leaves_the_config_unchanged() {
    let mut cfg = host_default();
    let before = cfg.clone();
    let err = parse_into(
        &mut cfg,
        "set system host-name other.example.com\n\
         set service inbound max-connections 7\n\
         set route new.example relay [10.0.0.9]\n\
         set queue retry \"1m\"\n\
         set service inbound max-connections 0\n",
    )
    .unwrap_err();
    assert_eq!(err.line, 5);
    assert_eq!(cfg, before);
    let err = parse_into(
        &mut cfg,
        "delete route example.com\nset route new.example concurrency 5000\n",
    )
    .unwrap_err();
    assert_eq!(err.line, 2);
    assert!(
        err.message.contains("out of range for concurrency"),
        "{err}"
    );
    assert_eq!(cfg, before);
}

#[test]
fn bounds_of_the_model_are_enforced() {
    let mut text = String::new();
    for i in 0..schema::MAX_LISTEN_ADDRESSES {
        text.push_str(&format!(
            "set service inbound listen 127.0.0.1:{}\n",
            2000 + i
        ));
    }
    let mut cfg = parse(&text).unwrap();
    // Repeating an address adds nothing and so stays within the bound.
    parse_into(&mut cfg, "set service inbound listen 127.0.0.1:2000\n").unwrap();
    let err = parse_into(&mut cfg, "set service inbound listen 127.0.0.1:3000\n").unwrap_err();
    assert!(
        err.message
            .contains("too many listen addresses in one service: at most 8")
    );

    let mut text = String::new();
    for i in 0..schema::MAX_PROXY_NETWORKS {
        text.push_str(&format!("set service outbound proxy-from 10.{i}.0.0/16\n"));
    }
    let mut cfg = parse(&text).unwrap();
    parse_into(&mut cfg, "set service outbound proxy-from 10.0.0.0/16\n").unwrap();
    let err = parse_into(&mut cfg, "set service outbound proxy-from 192.0.2.1\n").unwrap_err();
    assert!(
        err.message
            .contains("too many proxy-from networks in one service: at most 16"),
        "{err}"
    );

    let mut text = String::new();
    for i in 1..=schema::MAX_CLASSIFY_RULES {
        text.push_str(&format!("set classify {i} category X\n"));
    }
    let mut cfg = parse(&text).unwrap();
    parse_into(&mut cfg, "set classify 1 deny \"replaced\"\n").unwrap();
    let err = parse_into(&mut cfg, "set classify 5000 category X\n").unwrap_err();
    assert!(err.message.contains("too many classify rules"));

    let mut text = String::new();
    for i in 0..schema::MAX_ROUTES {
        text.push_str(&format!("set route d{i}.example relay [10.0.0.1]\n"));
    }
    let mut cfg = parse(&text).unwrap();
    parse_into(&mut cfg, "set route d0.example smarthost [10.0.0.2]\n").unwrap();
    let err = parse_into(&mut cfg, "set route one.more relay [10.0.0.1]\n").unwrap_err();
    assert!(err.message.contains("too many routes: at most 1024"));
}

#[test]
fn splitting_the_text_at_any_line_boundary_gives_the_same_config() {
    let text = messy_text();
    let whole = parse(text).unwrap();
    for (at, _) in text.match_indices('\n') {
        let mut cfg = Config::default();
        parse_into(&mut cfg, &text[..=at]).unwrap();
        parse_into(&mut cfg, &text[at + 1..]).unwrap();
        assert_eq!(cfg, whole, "split after octet {at}");
    }
    // Line by line, one statement at a time.
    let mut cfg = Config::default();
    for line in text.lines() {
        parse_into(&mut cfg, line).unwrap();
    }
    assert_eq!(cfg, whole);
}

// ---- printing ---------------------------------------------------------------------

#[test]
fn the_default_prints_as_nothing() {
    assert_eq!(print(&Config::default()), "");
    assert_eq!(parse("").unwrap(), Config::default());
    assert_eq!(parse("\n# only a comment\n\n").unwrap(), Config::default());
}

fn messy_text() -> &'static str {
    "\u{feff}# An administrator's file, written by hand.\r\n\
     \r\n\
     set queue   max-lifetime 120h\r\n\
     SET route Example.COM relay [10.1.1.5]:25,[10.1.1.6]\n\
     \t# subdomains too\n\
     set route .EXAMPLE.com. relay \"[10.1.1.5]\"\n\
     set route example.com failover-timeout 30s\n\
     set classify 30 remote 0.0.0.0/0 category EXTERNAL\n\
     set classify 10 remote-port 1024 remote 10.1.2.3/24 local 192.0.2.1 category INTERNAL\n\
     set classify 20 local-port 7633 deny \"no web \\\"interface\\\" here\"\n\
     set service outbound listen 10.1.1.1:587\n\
     set service inbound max-message-size 5M\n\
     set service inbound listen 0.0.0.0:25\n\
     set service inbound listen [::]:25\n\
     set service inbound listen 0.0.0.0:25\n\
     set service inbound idle-timeout 600s\n\
     set service inbound ehlo-keywords \"starttls size   pipelining\"\n\
     set service inbound greet-delay 0s\n\
     set service inbound greet-delay 5s\n\
     set service inbound max-recipients 0100\n\
     set system host-name gw.Example.net.\n\
     set queue retry \"300s 15m 3600s 1d\"\n"
}

#[test]
fn messy_text_prints_canonically() {
    let cfg = parse(messy_text()).unwrap();
    let expected = "\
set system host-name gw.Example.net
set service inbound listen 0.0.0.0:25
set service inbound listen [::]:25
set service inbound idle-timeout 10m
set service inbound max-message-size 5m
set service inbound greet-delay 5s
set service inbound ehlo-keywords \"PIPELINING SIZE STARTTLS\"
set service outbound listen 10.1.1.1:587
set classify 10 local 192.0.2.1/32 remote 10.1.2.0/24 remote-port 1024 category INTERNAL
set classify 20 local-port 7633 deny \"no web \\\"interface\\\" here\"
set classify 30 remote 0.0.0.0/0 category EXTERNAL
set route example.com relay [10.1.1.5]:25,[10.1.1.6]:25
set route example.com failover-timeout 30s
set route .example.com relay [10.1.1.5]:25
set queue retry \"5m 15m 1h 1d\"
";
    assert_eq!(print(&cfg), expected);
    assert_eq!(parse(expected).unwrap(), cfg);
    assert_eq!(
        cfg.classify[&20].action,
        Some(ClassifyAction::Deny("no web \"interface\" here".into()))
    );
    // max-lifetime 120h is the default 5d, so it does not print at all.
    let cfg = parse("set queue max-lifetime 120h\n").unwrap();
    assert_eq!(print(&cfg), "");
}

#[test]
fn lines_print_and_parse_back_one_by_one() {
    let mut rng = XorShift(0x5eed_0001);
    for _ in 0..200 {
        let cfg = random_config(&mut rng);
        for line in lines(&cfg) {
            let alone = parse(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(lines(&alone), std::slice::from_ref(&line), "{line}");
        }
    }
}

#[test]
fn deleting_every_printed_statement_returns_to_the_default() {
    let mut rng = XorShift(0x5eed_0002);
    for _ in 0..300 {
        let cfg = random_config(&mut rng);
        let mut shrinking = cfg.clone();
        for line in lines(&cfg) {
            let delete = line.replacen("set ", "delete ", 1);
            apply_line(&mut shrinking, &delete).unwrap_or_else(|e| panic!("{delete}: {e}"));
        }
        assert_eq!(shrinking, Config::default(), "{}", print(&cfg));
        // Deleting the entries whole does the same, in any order.
        let mut whole = cfg.clone();
        for line in lines(&cfg).iter().rev() {
            let words = lex::split(line).unwrap();
            let path_len = match words[1].text.as_str() {
                "classify" | "route" | "channel" | "category" | "ruleset" | "relay-rule" => 3,
                _ => words.len(),
            };
            let delete = format!(
                "delete {}",
                words[1..path_len]
                    .iter()
                    .map(lex::Word::written)
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            match apply_line(&mut whole, &delete) {
                Ok(()) | Err(LineError::NotConfigured { .. }) => {}
                Err(e) => panic!("{delete}: {e}"),
            }
        }
        assert_eq!(whole, Config::default(), "{}", print(&cfg));
    }
}

#[test]
fn a_quoted_value_that_names_a_setting_is_deleted_as_a_value() {
    let mut cfg = Config::default();
    cfg.inbound.ehlo_keywords = EhloKeywords::AUTH;
    let line = "set service inbound ehlo-keywords \"AUTH\"";
    assert_eq!(lines(&cfg), [line]);
    assert_eq!(parse(line).unwrap(), cfg);
    let mut deleted = cfg.clone();
    apply_line(
        &mut deleted,
        "delete service inbound ehlo-keywords \"AUTH\"",
    )
    .unwrap();
    assert_eq!(deleted, Config::default());
    // Unquoted, the word is the service's `auth` setting, which is not configured.
    let err = apply_line(
        &mut cfg.clone(),
        "delete service inbound ehlo-keywords AUTH",
    )
    .unwrap_err();
    assert_eq!(
        err,
        LineError::NotConfigured {
            path: "service inbound ehlo-keywords AUTH".into()
        }
    );
    // A value printed bare where it names a setting beside it is quoted too.
    let mut cfg = Config::default();
    cfg.system.host_name = "dns".into();
    cfg.inbound.channel = Some("auth".into());
    let printed = lines(&cfg);
    assert_eq!(
        printed,
        [
            "set system host-name \"dns\"",
            "set service inbound channel \"auth\""
        ]
    );
    for line in &printed {
        apply_line(&mut cfg, &line.replacen("set ", "delete ", 1)).unwrap();
    }
    assert_eq!(cfg, Config::default());
}

#[test]
fn a_quoted_word_is_never_a_keyword() {
    let cases = [
        (
            "\"set\" system host-name gw.example.com",
            "quoted word \"set\" where a keyword belongs: a quoted word is a value, and keywords are written without quotes; expected one of set, delete",
        ),
        (
            "set \"system\" host-name gw.example.com",
            "quoted word \"system\" after 'set' where a keyword belongs",
        ),
        (
            "delete service inbound \"auth\"",
            "quoted word \"auth\" after 'delete service inbound' where a keyword belongs",
        ),
        (
            "set ruleset X restrict PLAIN \"tls\"",
            "quoted word \"tls\" after 'set ruleset X restrict PLAIN' where a keyword belongs: a quoted word is a value, and keywords are written without quotes; expected 'tls'",
        ),
        (
            "set classify 10 category \"DENY\" \"deny\" x",
            "unexpected 'deny' after the complete statement 'set classify 10 category \"DENY\"'",
        ),
    ];
    for (line, message) in cases {
        let err = apply_line(&mut Config::default(), line).unwrap_err();
        assert!(err.to_string().starts_with(message), "{line}: {err}");
        let words = lex::split(line).unwrap();
        assert!(candidates(&Config::default(), &words).is_err(), "{line}");
    }
    // Keys and values may be quoted, whatever their text.
    let cfg = parse(
        "set \
         service \"inbound\" auth \"yes\"\n\
         set classify \"10\" category \"DENY\"\n\
         set route \"example.com\" channel \"mx\"\n",
    );
    let cfg = cfg.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.inbound.auth, Some(true));
    assert_eq!(
        cfg.classify[&10].action,
        Some(ClassifyAction::Category("DENY".into()))
    );
}

/// Values drawn to collide: the names of every node of the schema, in the case written
/// and in upper case, the verbs, and text that needs quotes.
fn colliding_values() -> Vec<String> {
    fn names(nodes: &[schema::Node], out: &mut Vec<String>) {
        for node in nodes {
            for name in [node.name.to_string(), node.name.to_ascii_uppercase()] {
                if !out.contains(&name) {
                    out.push(name);
                }
            }
            match &node.kind {
                schema::NodeKind::Container(children) => names(children, out),
                schema::NodeKind::List(list) => names(list.children, out),
                schema::NodeKind::Leaf(_) => {}
            }
        }
    }
    let mut out = Vec::new();
    names(schema::ROOT, &mut out);
    for text in [
        "set",
        "delete",
        "SET",
        "a b",
        "#x",
        "x # y",
        "\"",
        "say \"hi\"",
        r"back\slash",
        "",
    ] {
        out.push(text.to_string());
    }
    out
}

/// Every setting that takes a value: the words of its path (a key that parses for each
/// list on the way, the setting's name last) and its value's spec.
fn settings_with_values() -> Vec<(String, &'static schema::ValueSpec)> {
    fn walk(
        nodes: &'static [schema::Node],
        path: &str,
        out: &mut Vec<(String, &'static schema::ValueSpec)>,
    ) {
        for node in nodes {
            let path = format!("{path} {}", node.name);
            match &node.kind {
                schema::NodeKind::Container(children) => walk(children, &path, out),
                schema::NodeKind::List(list) => {
                    let key = ["P_1", "tcp_x", "example.com", "10", "inbound", "eth0"]
                        .into_iter()
                        .find(|k| (list.key.parse)(k).is_ok())
                        .unwrap_or_else(|| panic!("no sample key for {path}"));
                    walk(list.children, &format!("{path} {key}"), out);
                }
                schema::NodeKind::Leaf(leaf) => {
                    if let Some(spec) = leaf.value {
                        out.push((path, spec));
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(schema::ROOT, "", &mut out);
    out
}

/// Whatever value a setting accepts, even one that is also a keyword or needs quotes,
/// prints so that the printed text parses back to the same configuration, and deleting
/// every printed statement as printed returns to the default.
#[test]
fn every_accepted_value_prints_deletably_even_where_it_names_a_setting() {
    let values = colliding_values();
    let mut accepted = Vec::new();
    for (path, spec) in settings_with_values() {
        for value in &values {
            let suffix = spec.suffix.map(|s| format!(" {s}")).unwrap_or_default();
            let line = format!("set{path} {}{suffix}", lex::quoted(value));
            let mut cfg = Config::default();
            if apply_line(&mut cfg, &line).is_err() {
                continue;
            }
            accepted.push(format!("{path} {value}"));
            let text = print(&cfg);
            assert_eq!(parse(&text).unwrap(), cfg, "{line}\n{text}");
            let mut shrinking = cfg.clone();
            for printed in lines(&cfg) {
                let delete = printed.replacen("set ", "delete ", 1);
                apply_line(&mut shrinking, &delete)
                    .unwrap_or_else(|e| panic!("{line}: {delete}: {e}"));
            }
            assert_eq!(shrinking, Config::default(), "{line}\n{text}");
        }
    }
    // The collisions that once went wrong are among those tried.
    for case in [
        " service inbound ehlo-keywords AUTH",
        " system host-name dns",
        " service inbound channel auth",
        " classify 10 category DENY",
        " classify 10 deny local",
        " category P_1 ruleset CHANNEL",
        " relay-rule 10 from to",
        " route example.com channel mx",
        " route example.com auth user danger-cleartext",
        " classify 10 deny a b",
        " classify 10 deny #x",
    ] {
        assert!(
            accepted.iter().any(|a| a == case),
            "{case} not tried: {accepted:#?}"
        );
    }
}

fn full_config() -> Config {
    let mut cfg = Config::default();
    cfg.system.host_name = "mx1.example.org".into();
    for name in ServiceName::ALL {
        let s = cfg.service_mut(name);
        s.listen = vec![
            sa("0.0.0.0:25"),
            sa("[2001:db8::25]:25"),
            sa("[fe80::1%3]:2525"),
        ];
        s.max_connections = 65535;
        s.max_connections_per_ip = 1;
        s.idle_timeout = secs(1);
        s.data_timeout = secs(90);
        s.max_session_time = value::MAX_DURATION;
        s.max_messages_per_session = u32::MAX;
        s.max_message_size = 1024;
        s.max_recipients = u32::MAX;
        s.max_line_length = 65536;
        s.error_limit = 1;
        s.greet_delay = secs(3);
        s.ehlo_keywords = EhloKeywords::NONE;
    }
    cfg.outbound.ehlo_keywords = EhloKeywords::NONE.with(EhloKeywords::CHUNKING);
    cfg.outbound.max_message_size = u64::MAX;
    cfg.classify.insert(
        1,
        ClassifyRule {
            local: Some(cidr("::/0")),
            local_port: Some(65535),
            remote: Some(cidr("2001:db8::/32")),
            remote_port: Some(1),
            action: Some(ClassifyAction::Deny("\\ \"quoted\" \t # and more".into())),
        },
    );
    cfg.classify.insert(
        65535,
        ClassifyRule {
            local: None,
            local_port: None,
            remote: None,
            remote_port: None,
            action: Some(ClassifyAction::Category("Z_9".into())),
        },
    );
    let mut route = Route::new(NextHop::Smarthost(vec![
        RelayHost::Name {
            name: "smtp.provider.example".into(),
            port: 587,
        },
        lit("[::1]:587"),
    ]));
    route.auth_user = Some("relay@example.com".into());
    route.danger_auth_cleartext = true;
    route.failover_timeout = secs(86_400);
    route.avoid_time = Duration::ZERO;
    route.concurrency = 1000;
    cfg.routes.insert(DomainPattern::Any, route);
    cfg.routes.insert(
        DomainPattern::Suffix("a-b.example".into()),
        Route::new(NextHop::Relay(vec![lit("10.0.0.1:25"), lit("10.0.0.2:26")])),
    );
    cfg.queue.retry = vec![secs(1)];
    cfg.queue.max_lifetime = secs(59);
    cfg
}

#[test]
fn hand_built_models_round_trip() {
    for cfg in [Config::default(), host_default(), full_config()] {
        let text = print(&cfg);
        assert_eq!(parse(&text).as_ref(), Ok(&cfg), "{text}");
        assert_eq!(print(&parse(&text).unwrap()), text);
    }
    let text = print(&full_config());
    assert!(text.contains("set service outbound max-message-size 18446744073709551615\n"));
    assert!(
        text.contains("set service inbound max-message-size 1k\n"),
        "{text}"
    );
    assert!(
        text.contains("set route * smarthost smtp.provider.example:587,[::1]:587\n"),
        "{text}"
    );
    assert!(
        text.contains("set route * auth user relay@example.com\n"),
        "{text}"
    );
    assert!(
        text.contains("set route * auth danger-cleartext yes\n"),
        "{text}"
    );
    assert!(
        text.contains("set service inbound ehlo-keywords \"\"\n"),
        "{text}"
    );
    assert!(
        text.contains("deny \"\\\\ \\\"quoted\\\" \t # and more\"\n"),
        "{text}"
    );
}

// ---- generated models ---------------------------------------------------------------

/// A small deterministic pseudo-random generator (xorshift64).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        match (hi - lo).checked_add(1) {
            Some(span) => lo + self.next() % span,
            None => self.next(),
        }
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.next() % one_in == 0
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.range(0, items.len() as u64 - 1) as usize]
    }
}

fn random_ip(rng: &mut XorShift) -> IpAddr {
    match rng.range(0, 3) {
        0 => IpAddr::V6(Ipv6Addr::from(
            u128::from(rng.next()) << 64 | u128::from(rng.next()),
        )),
        1 => IpAddr::V6(Ipv6Addr::from(rng.range(0, 3) as u128)),
        _ => IpAddr::V4(Ipv4Addr::from(rng.next() as u32)),
    }
}

fn random_duration(rng: &mut XorShift, zero: bool) -> Duration {
    let max = value::MAX_DURATION.as_secs();
    let d = match rng.range(0, 4) {
        0 => rng.range(0, 100),
        1 => rng.range(0, 1000) * 60,
        2 => rng.range(0, 100) * 3600,
        3 => rng.range(0, 365) * 86_400,
        _ => rng.range(0, max),
    };
    secs(if d == 0 && !zero { 1 } else { d })
}

fn random_label(rng: &mut XorShift, alphabet: &[u8], len: u64) -> String {
    (0..len).map(|_| rng.pick(alphabet) as char).collect()
}

fn random_domain(rng: &mut XorShift) -> String {
    let labels: Vec<String> = (0..rng.range(1, 4))
        .map(|_| {
            let len = rng.range(1, 12);
            let mut l = random_label(rng, b"abcdefghijklmnopqrstuvwxyz0123456789-", len);
            if l.starts_with('-') || l.ends_with('-') {
                l = format!("x{l}x");
            }
            l
        })
        .collect();
    labels.join(".")
}

fn random_hosts(rng: &mut XorShift) -> Vec<RelayHost> {
    let mut hosts = Vec::new();
    for _ in 0..rng.range(1, value::MAX_RELAY_HOSTS as u64) {
        let port = rng.range(1, 65535) as u16;
        let h = if rng.chance(3) {
            RelayHost::Name {
                name: format!("{}.example", random_domain(rng)),
                port,
            }
        } else {
            RelayHost::Address(SocketAddr::new(random_ip(rng), port))
        };
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    hosts
}

fn random_cidr(rng: &mut XorShift) -> Cidr {
    let ip = random_ip(rng);
    let max = if ip.is_ipv4() { 32 } else { 128 };
    Cidr::new(ip, rng.range(0, max) as u8).unwrap()
}

fn random_config(rng: &mut XorShift) -> Config {
    let mut cfg = Config::default();
    if rng.chance(3) {
        let token = &mut cfg.system.token;
        token.backend = crate::proto::config::TokenBackend::Pkcs11;
        token.module = Some("/usr/lib/softhsm/libsofthsm2.so".to_string());
        if rng.chance(2) {
            token.label = Some(format!("token {}", rng.range(0, 999)));
        }
        if rng.chance(2) {
            token.pin_file = Some("/etc/drawbridge/pins".to_string());
        }
    }
    if rng.chance(2) {
        cfg.system.host_name = random_domain(rng);
        if rng.chance(2) {
            cfg.system.host_name = cfg.system.host_name.to_ascii_uppercase();
        }
    }
    for name in ServiceName::ALL {
        let s = cfg.service_mut(name);
        for _ in 0..rng.range(0, 3) {
            let addr = match random_ip(rng) {
                IpAddr::V4(a) => SocketAddr::new(a.into(), rng.range(1, 65535) as u16),
                IpAddr::V6(a) => SocketAddr::new(a.into(), rng.range(1, 65535) as u16),
            };
            if !s.listen.contains(&addr) {
                s.listen.push(addr);
            }
        }
        let u = |rng: &mut XorShift, lo: u32, hi: u32| rng.range(lo.into(), hi.into()) as u32;
        if rng.chance(2) {
            s.max_connections = u(rng, 1, 65535);
        }
        if rng.chance(2) {
            s.max_connections_per_ip = u(rng, 1, 65535);
        }
        if rng.chance(2) {
            s.idle_timeout = random_duration(rng, false);
        }
        if rng.chance(2) {
            s.data_timeout = random_duration(rng, false);
        }
        if rng.chance(2) {
            s.max_session_time = random_duration(rng, false);
        }
        if rng.chance(2) {
            s.max_messages_per_session = u(rng, 1, u32::MAX);
        }
        if rng.chance(2) {
            s.max_message_size = match rng.range(0, 3) {
                0 => rng.range(1, 64) << 30,
                1 => rng.range(1, 4096) << 20,
                2 => rng.range(1, 4096) << 10,
                _ => rng.range(1024, u64::MAX),
            };
        }
        if rng.chance(2) {
            s.max_recipients = u(rng, 100, u32::MAX);
        }
        if rng.chance(2) {
            s.max_line_length = u(rng, 1000, 65536);
        }
        if rng.chance(2) {
            s.error_limit = u(rng, 1, u32::MAX);
        }
        if rng.chance(2) {
            s.greet_delay = random_duration(rng, true);
        }
        // From a generator of their own, so that the other settings drawn stay those
        // the seeds gave before these settings existed.
        let mut own = XorShift(rng.0.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15);
        if own.chance(2) {
            s.proxy_protocol = true;
        }
        for _ in 0..own.range(0, 3) {
            let network = random_cidr(&mut own);
            if !s.proxy_from.contains(&network) {
                s.proxy_from.push(network);
            }
        }
        if rng.chance(2) {
            for (k, _) in EhloKeywords::NAMES {
                if rng.chance(2) {
                    s.ehlo_keywords = s.ehlo_keywords.without(k);
                }
            }
        }
    }
    for _ in 0..rng.range(0, 5) {
        let pick = |rng: &mut XorShift| {
            if rng.chance(2) {
                Some(random_cidr(rng))
            } else {
                None
            }
        };
        let rule = ClassifyRule {
            local: pick(rng),
            local_port: if rng.chance(2) {
                Some(rng.range(1, 65535) as u16)
            } else {
                None
            },
            remote: pick(rng),
            remote_port: if rng.chance(2) {
                Some(rng.range(1, 65535) as u16)
            } else {
                None
            },
            action: Some(if rng.chance(2) {
                let len = rng.range(1, value::MAX_CATEGORY_OCTETS as u64);
                ClassifyAction::Category(random_label(rng, b"ABCXYZ019_", len))
            } else {
                let len = rng.range(1, value::MAX_DENY_TEXT_OCTETS as u64);
                let text: String = (0..len)
                    .map(|_| match rng.range(0, 9) {
                        0 => '"',
                        1 => '\\',
                        2 => ' ',
                        3 => '\t',
                        4 => '#',
                        _ => rng.range(0x20, 0x7e) as u8 as char,
                    })
                    .collect();
                ClassifyAction::Deny(text)
            }),
        };
        cfg.classify.insert(rng.range(1, 65535) as u32, rule);
    }
    for _ in 0..rng.range(0, 4) {
        let pattern = match rng.range(0, 2) {
            0 => DomainPattern::Any,
            1 => DomainPattern::Exact(random_domain(rng)),
            _ => DomainPattern::Suffix(random_domain(rng)),
        };
        let hosts = random_hosts(rng);
        let mut route = Route::new(if rng.chance(2) {
            NextHop::Relay(hosts)
        } else {
            NextHop::Smarthost(hosts)
        });
        if rng.chance(2) {
            route.failover_timeout = random_duration(rng, false);
        }
        if rng.chance(2) {
            route.avoid_time = random_duration(rng, true);
        }
        if rng.chance(2) {
            route.concurrency = rng.range(1, 1000) as u32;
        }
        if rng.chance(3) {
            route.auth_user = Some(format!("u{}@{}", rng.range(0, 99), random_domain(rng)));
        }
        route.danger_auth_cleartext = rng.chance(4);
        cfg.routes.insert(pattern, route);
    }
    if rng.chance(2) {
        cfg.queue.retry = (0..rng.range(1, value::MAX_RETRY_STEPS as u64))
            .map(|_| random_duration(rng, false))
            .collect();
    }
    if rng.chance(2) {
        cfg.queue.max_lifetime = random_duration(rng, false);
    }
    let names = ["INTERNAL", "EXTERNAL", "DEFAULT", "P_1"];
    let channels = ["tcp_local", "tcp_auth", "tcp_x9"];
    for _ in 0..rng.range(0, 3) {
        let c = cfg.categories.entry(rng.pick(&names).into()).or_default();
        if rng.chance(2) {
            c.ruleset = Some(rng.pick(&names).into());
        } else {
            c.channel = Some(rng.pick(&channels).into());
        }
    }
    for _ in 0..rng.range(0, 3) {
        let mut r = crate::proto::config::Ruleset::default();
        let mut set = crate::proto::sasl::MechanismSet::EMPTY;
        for m in crate::proto::sasl::MechanismName::ALL {
            if rng.chance(2) {
                set = set.with(m);
            }
            if rng.chance(3) {
                r.needs_tls = r.needs_tls.with(m);
            }
        }
        if rng.chance(2) {
            r.mechanisms = set;
        }
        cfg.rulesets.insert(rng.pick(&names).into(), r);
    }
    for _ in 0..rng.range(0, 4) {
        let pattern = |rng: &mut XorShift| {
            rng.chance(2).then(|| {
                crate::proto::config::AddressPattern::new(rng.pick(&[
                    "*@example.com",
                    "postmaster@*",
                    "a*b%c!d@[1.2.3.4]",
                    "x",
                ]))
            })
        };
        let rule = crate::proto::config::RelayRule {
            source: rng.chance(2).then(|| rng.pick(&channels).into()),
            from: pattern(rng),
            destination: rng.chance(2).then(|| rng.pick(&channels).into()),
            to: pattern(rng),
            action: Some(if rng.chance(2) {
                crate::proto::config::RelayAction::Allow
            } else {
                crate::proto::config::RelayAction::Deny("5.7.1 \"no\" relaying".into())
            }),
        };
        cfg.relay_rules.insert(rng.range(1, 65535) as u32, rule);
    }
    clashing_values(
        &mut cfg,
        XorShift(rng.0.rotate_left(41) ^ 0x2545_f491_4f6c_dd1d),
    );
    cfg
}

/// Gives some settings values that are also the names of settings beside them (an EHLO
/// keyword list of `AUTH` alone, a host name `dns`, a category `DENY`, an address
/// pattern `to`) or that need quotes. Printed, each must read back as that value, in
/// `set` and in `delete`. Drawn from a generator of their own, so that the other
/// settings drawn stay those the seeds gave.
fn clashing_values(cfg: &mut Config, mut rng: XorShift) {
    if rng.chance(4) {
        cfg.system.host_name = rng
            .pick(&[
                "dns",
                "token",
                "syslog",
                "gateway",
                "POSTMASTER",
                "auth-throttle",
            ])
            .into();
    }
    if let Some(label) = &mut cfg.system.token.label
        && rng.chance(2)
    {
        *label = rng.pick(&["module", "label", "backend", "pin-file"]).into();
    }
    for name in ServiceName::ALL {
        let s = cfg.service_mut(name);
        if rng.chance(4) {
            s.ehlo_keywords = if rng.chance(2) {
                EhloKeywords::AUTH
            } else {
                rng.pick(&EhloKeywords::NAMES).0
            };
        }
        if rng.chance(4) {
            s.channel = Some(
                rng.pick(&["auth", "channel", "listen", "disable", "certificate"])
                    .into(),
            );
        }
    }
    for rule in cfg.classify.values_mut() {
        if rng.chance(3) {
            rule.action = Some(if rng.chance(2) {
                ClassifyAction::Category(rng.pick(&["DENY", "LOCAL", "REMOTE", "CATEGORY"]).into())
            } else {
                ClassifyAction::Deny(
                    rng.pick(&["local", "remote-port", "deny", "#", "set"])
                        .into(),
                )
            });
        }
    }
    for route in cfg.routes.values_mut() {
        if rng.chance(3) {
            route.channel = Some(
                rng.pick(&["mx", "relay", "smarthost", "channel", "concurrency"])
                    .into(),
            );
        }
        if route.auth_user.is_some() && rng.chance(2) {
            route.auth_user = Some(rng.pick(&["user", "danger-cleartext"]).into());
        }
    }
    for category in cfg.categories.values_mut() {
        if rng.chance(3) {
            if category.ruleset.is_some() {
                category.ruleset = Some(rng.pick(&["CHANNEL", "RULESET"]).into());
            } else {
                category.channel = Some(rng.pick(&["channel", "ruleset"]).into());
            }
        }
    }
    let names = ["to", "from", "allow", "deny", "source", "destination"];
    for rule in cfg.relay_rules.values_mut() {
        if rng.chance(3) {
            rule.source = Some(rng.pick(&names).into());
            rule.from = Some(crate::proto::config::AddressPattern::new(rng.pick(&names)));
        }
        if rng.chance(3) {
            rule.destination = Some(rng.pick(&names).into());
            rule.to = Some(crate::proto::config::AddressPattern::new(rng.pick(&names)));
        }
    }
}

#[test]
fn generated_models_round_trip_and_print_canonically() {
    let mut rng = XorShift(0x0dd_ba11);
    for _ in 0..500 {
        let cfg = random_config(&mut rng);
        let text = print(&cfg);
        let back = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back, cfg, "{text}");
        assert_eq!(print(&back), text);
        // Merging the printed text onto the default changes nothing twice over.
        let mut again = back.clone();
        parse_into(&mut again, &text).unwrap();
        assert_eq!(again, cfg);
    }
}

// ---- robustness ---------------------------------------------------------------------

/// Whatever parses prints to a text that parses back to the same model.
fn check_consistent(text: &str) {
    if let Ok(cfg) = parse(text) {
        let printed = print(&cfg);
        assert_eq!(parse(&printed).as_ref(), Ok(&cfg), "{text:?}\n{printed}");
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0xfeed_f00d);
    for _ in 0..3000 {
        let len = rng.range(0, 300) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| match rng.range(0, 5) {
                0 => b'\n',
                1 => b' ',
                2 => b'"',
                3 => rng.next() as u8,
                _ => rng.range(0x20, 0x7e) as u8,
            })
            .collect();
        check_consistent(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn random_word_soup_never_panics() {
    const WORDS: &[&str] = &[
        "set",
        "system",
        "host-name",
        "service",
        "inbound",
        "outbound",
        "listen",
        "max-connections",
        "max-connections-per-ip",
        "proxy-protocol",
        "proxy-from",
        "idle-timeout",
        "data-timeout",
        "max-session-time",
        "max-messages-per-session",
        "max-message-size",
        "max-recipients",
        "max-line-length",
        "error-limit",
        "greet-delay",
        "ehlo-keywords",
        "classify",
        "local",
        "local-port",
        "remote",
        "remote-port",
        "category",
        "deny",
        "route",
        "relay",
        "smarthost",
        "failover-timeout",
        "avoid-time",
        "concurrency",
        "queue",
        "retry",
        "max-lifetime",
        "category",
        "ruleset",
        "mechanisms",
        "restrict",
        "tls",
        "relay-rule",
        "source",
        "from",
        "destination",
        "to",
        "allow",
        "PLAIN",
        "\"PLAIN LOGIN\"",
        "tcp_local",
        "*@example.com",
        "0",
        "1",
        "25",
        "100",
        "1000",
        "65535",
        "65536",
        "4294967296",
        "5m",
        "0s",
        "365d",
        "366d",
        "35M",
        "1k",
        "\"\"",
        "\"5m 1h\"",
        "\"SIZE\"",
        "INTERNAL",
        "x",
        "*",
        ".example.com",
        "example.com",
        "[::1]:25",
        "[10.0.0.1]",
        "10.0.0.0/8",
        "::/0",
        "127.0.0.1:25",
        "\"no\"",
        "\"",
        "\\",
        "#",
        "\"a\\\"b\"",
        "\"unterminated",
    ];
    let mut rng = XorShift(0xabad_1dea);
    for _ in 0..5000 {
        let mut line = String::new();
        if rng.chance(8) {
            line.push_str(rng.pick(WORDS));
        } else {
            line.push_str("set");
        }
        for _ in 0..rng.range(0, 10) {
            line.push(' ');
            line.push_str(rng.pick(WORDS));
        }
        check_consistent(&line);
    }
}

#[test]
fn mutated_canonical_text_never_panics() {
    let mut rng = XorShift(0x1234_5678);
    for _ in 0..300 {
        let text = print(&random_config(&mut rng));
        for _ in 0..5 {
            let mut chars: Vec<char> = text.chars().collect();
            for _ in 0..rng.range(1, 4) {
                if chars.is_empty() {
                    break;
                }
                let at = rng.range(0, chars.len() as u64 - 1) as usize;
                match rng.range(0, 2) {
                    0 => {
                        chars.remove(at);
                    }
                    1 => chars.insert(
                        at,
                        rng.pick(&['"', ' ', '\\', '0', '9', 'm', ',', '.', '/', ':']),
                    ),
                    _ => chars[at] = char::from(rng.range(0x20, 0x7e) as u8),
                }
            }
            check_consistent(&chars.into_iter().collect::<String>());
        }
    }
}

// ---- the schema's grammar: abbreviations, several settings, delete, completion ------------

#[test]
fn keywords_may_be_abbreviated_where_unambiguous() {
    let cfg = parse(
        "se sys host gw.example.org\n\
         set serv inb max-connections-p 3\n\
         set ro .example.org rel [10.0.0.1]\n\
         set ro .example.org conc 2\n",
    )
    .unwrap();
    assert_eq!(cfg.system.host_name, "gw.example.org");
    assert_eq!(cfg.inbound.max_connections_per_ip, 3);
    let route = &cfg.routes[&DomainPattern::Suffix("example.org".into())];
    assert_eq!(route.concurrency, 2);
    assert_eq!(
        print(&cfg),
        "set system host-name gw.example.org\n\
         set service inbound max-connections-per-ip 3\n\
         set route .example.org relay [10.0.0.1]:25\n\
         set route .example.org concurrency 2\n"
    );
    // Values are never abbreviated.
    assert!(parse("set service inbound verify-recipients y\n").is_err());
}

#[test]
fn one_line_may_set_several_settings_of_one_entry() {
    let cfg = parse(
        "set route example.org relay [10.0.0.1] concurrency 4 avoid-time 0s\n\
         set relay-rule 7 to *@example.org allow\n\
         set relay-rule 7 deny \"5.7.1 no\"\n",
    )
    .unwrap();
    let route = &cfg.routes[&DomainPattern::Exact("example.org".into())];
    assert_eq!((route.concurrency, route.avoid_time), (4, Duration::ZERO));
    // A later action replaces the earlier one; the rule's match stays.
    assert_eq!(
        lines(&cfg)[3],
        "set relay-rule 7 to *@example.org deny \"5.7.1 no\""
    );
}

#[test]
fn delete_removes_what_the_path_names() {
    let mut cfg = host_default();
    apply_line(&mut cfg, "delete route .example.com").unwrap();
    assert!(
        !cfg.routes
            .contains_key(&DomainPattern::Suffix("example.com".into()))
    );
    apply_line(&mut cfg, "delete classify 20").unwrap();
    assert_eq!(cfg.classify.keys().collect::<Vec<_>>(), [&10, &30]);
    apply_line(&mut cfg, "set service inbound tls-listen 127.0.0.1:4650").unwrap();
    apply_line(&mut cfg, "set service inbound tls-listen 127.0.0.1:4651").unwrap();
    apply_line(&mut cfg, "delete service inbound tls-listen 127.0.0.1:4650").unwrap();
    assert_eq!(cfg.inbound.tls_listen, [sa("127.0.0.1:4651")]);
    apply_line(&mut cfg, "delete service inbound tls-listen").unwrap();
    assert!(cfg.inbound.tls_listen.is_empty());
    // A setting of a rule goes, and the rule stays until it has nothing left.
    apply_line(&mut cfg, "delete classify 10 remote").unwrap();
    assert_eq!(cfg.classify[&10].remote, None);
    apply_line(&mut cfg, "delete classify 10 category INTERNAL").unwrap();
    assert!(!cfg.classify.contains_key(&10));
    // A value that is not the one set is not deleted.
    let err = apply_line(&mut cfg, "delete system host-name other.example").unwrap_err();
    assert!(matches!(err, LineError::NotConfigured { .. }), "{err}");
    apply_line(&mut cfg, "delete system host-name GW.example.com.").unwrap_err();
    apply_line(&mut cfg, "delete system host-name gw.example.com").unwrap();
    assert_eq!(cfg.system.host_name, Config::default().system.host_name);
    // A container and a whole list.
    apply_line(&mut cfg, "delete service inbound").unwrap();
    assert_eq!(cfg.inbound, Config::default().inbound);
    apply_line(&mut cfg, "delete route").unwrap();
    assert!(cfg.routes.is_empty());
    apply_line(&mut cfg, "delete relay-rule").unwrap();
    apply_line(&mut cfg, "delete").unwrap_err();
    apply_line(&mut cfg, "delete service").unwrap();
    apply_line(&mut cfg, "delete classify").unwrap();
    assert_eq!(cfg, Config::default());
}

#[test]
fn bare_entries_are_kept_and_printed() {
    let cfg = parse("set category PARTNER\nset route example.org\n").unwrap();
    assert_eq!(print(&cfg), "set route example.org\nset category PARTNER\n");
    assert_eq!(parse(&print(&cfg)).unwrap(), cfg);
    assert_eq!(
        cfg.routes[&DomainPattern::Exact("example.org".into())].next_hop,
        None
    );
}

#[test]
fn candidates_come_from_the_schema_and_the_configuration() {
    let cfg = host_default();
    let words = |text: &str| -> Vec<lex::Word> { lex::split(text).unwrap() };
    let names = |c: Vec<Candidate>| -> Vec<String> { c.into_iter().map(|c| c.word).collect() };
    assert_eq!(names(candidates(&cfg, &[]).unwrap()), ["set", "delete"]);
    let top = names(candidates(&cfg, &words("set")).unwrap());
    assert_eq!(top[..3], ["system", "service", "classify"]);
    // The configured route patterns, then the placeholder for a new one.
    assert_eq!(
        names(candidates(&cfg, &words("set route")).unwrap()),
        ["example.com", ".example.com", "*", "<PATTERN>"]
    );
    let after_value = names(candidates(&cfg, &words("set route * concurrency 3")).unwrap());
    assert!(after_value.contains(&"failover-timeout".to_string()));
    assert_eq!(
        after_value.last().map(String::as_str),
        Some(END_OF_STATEMENT)
    );
    let value = candidates(&cfg, &words("set service inbound idle-timeout")).unwrap();
    assert_eq!(value.len(), 1);
    assert!(value[0].placeholder);
    assert_eq!(value[0].word, "<DURATION>");
    assert_eq!(
        names(candidates(&cfg, &words("set service inbound verify-recipients")).unwrap()),
        ["yes", "no", "<yes|no>"]
    );
    assert_eq!(
        names(candidates(&cfg, &words("delete service inbound listen")).unwrap()),
        ["127.0.0.1:2525", END_OF_STATEMENT]
    );
    assert_eq!(
        names(candidates(&cfg, &words("set ruleset X restrict PLAIN")).unwrap()),
        ["tls"]
    );
    let err = candidates(&cfg, &words("set servce")).unwrap_err();
    assert!(
        err.to_string().contains("unknown keyword 'servce'"),
        "{err}"
    );
    let err = candidates(&cfg, &words("set service inbound max")).unwrap_err();
    assert!(matches!(err, LineError::Ambiguous { .. }), "{err}");
}

#[test]
fn every_leaf_has_help_and_every_value_an_expectation() {
    fn walk(nodes: &[schema::Node], path: &str) {
        for node in nodes {
            let path = format!("{path} {}", node.name);
            assert!(!node.help.is_empty(), "{path}");
            match &node.kind {
                schema::NodeKind::Container(children) => walk(children, &path),
                schema::NodeKind::List(list) => {
                    assert!(!list.key.expected.is_empty(), "{path}");
                    walk(list.children, &path)
                }
                schema::NodeKind::Leaf(leaf) => {
                    if let Some(spec) = leaf.value {
                        assert!(
                            !spec.expected.is_empty() && !spec.placeholder.is_empty(),
                            "{path}"
                        );
                    }
                }
            }
        }
    }
    walk(schema::ROOT, "set");
}

#[test]
fn load_merges_or_replaces_and_refuses_bad_text_whole() {
    let mut c = host_default();
    load_into(&mut c, "set system host-name merged.example\n", false).unwrap();
    assert_eq!(c.system.host_name, "merged.example");
    assert_eq!(c.inbound, host_default().inbound);
    load_into(&mut c, "set service inbound listen 127.0.0.1:25\n", true).unwrap();
    assert_eq!(c.system, Config::default().system);
    let before = c.clone();
    let err = load_into(
        &mut c,
        "set system host-name ok.example\nset bogus\n",
        false,
    )
    .unwrap_err();
    assert!(err.contains("line 2"), "{err}");
    assert_eq!(c, before);
}

#[test]
fn a_file_that_is_not_configuration_is_refused_without_showing_its_lines() {
    let mut c = host_default();
    let before = c.clone();
    // A PIN file, a key, a password file: the line is not shown.
    for secret in [
        "4711-s3cret",
        "-----BEGIN PRIVATE KEY-----",
        "\"quoted s3cret\"",
    ] {
        let err = load_file_into(&mut c, &format!("{secret}\n"), false).unwrap_err();
        assert_eq!(
            err, "load: line 1: not a set or delete statement (the line is not shown)",
            "{secret}"
        );
        assert!(!err.contains("s3cret") && !err.contains("BEGIN"));
        // Pasted by the operator, the line is the operator's own: it is quoted.
        let pasted = load_into(&mut c, &format!("{secret}\n"), false).unwrap_err();
        let first_word = secret.trim_matches('"').split(' ').next().unwrap();
        assert!(pasted.contains(first_word), "{pasted}");
    }
    // A statement's own errors are still told in full, abbreviations and all.
    let err = load_file_into(
        &mut c,
        "# ours\nset system host-name ok.example\nset bogus x\n",
        false,
    )
    .unwrap_err();
    assert!(err.contains("line 3: unknown keyword 'bogus'"), "{err}");
    assert_eq!(c, before);
    load_file_into(&mut c, "se system host-name file.example\n", false).unwrap();
    assert_eq!(c.system.host_name, "file.example");
}
