//! Open-relay attempts through the gateway as shipped: every form nmap's smtp-open-relay
//! script tries, and the other ways of hiding a second hop, from an EXTERNAL and from an
//! INTERNAL client, with `* smarthost` and with `* mx` (dnsmasq).
//!
//! For each recipient the client's reply is compared with `drawbridge explain`'s
//! decision, and every accepted message is looked for at the next hop `explain` named,
//! with the recipient address `explain` named. Mail for our own address literal never
//! leaves by `*`.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::*;

/// The client addresses: classify rules make 127.0.0.2 INTERNAL and the rest EXTERNAL.
const EXTERNAL_IP: &str = "127.0.0.1";
const INTERNAL_IP: &str = "127.0.0.2";
/// A domain that is not ours.
const FOREIGN: &str = "relay.test";
/// Our host name, under our routed domain `.example.com`.
const HOST: &str = "gw.example.com";

/// (MAIL FROM, RCPT TO) pairs, without angle brackets.
fn attempts() -> Vec<(String, String)> {
    let ip = "127.0.0.1";
    let d = FOREIGN;
    let srv = HOST;
    let from_ip = format!("antispam@[{ip}]");
    let mut v: Vec<(String, String)> = vec![
        // nmap smtp-open-relay, its sixteen combinations.
        (String::new(), format!("relaytest@{d}")),
        (format!("antispam@{d}"), format!("relaytest@{d}")),
        (format!("antispam@{srv}"), format!("relaytest@{d}")),
        (from_ip.clone(), format!("relaytest@{d}")),
        (from_ip.clone(), format!("relaytest%{d}@[{ip}]")),
        (from_ip.clone(), format!("relaytest%{d}@{srv}")),
        (from_ip.clone(), format!("\"relaytest@{d}\"")),
        (from_ip.clone(), format!("\"relaytest%{d}\"")),
        (from_ip.clone(), format!("relaytest@{d}@[{ip}]")),
        (from_ip.clone(), format!("\"relaytest@{d}\"@[{ip}]")),
        (from_ip.clone(), format!("relaytest@{d}@{srv}")),
        (from_ip.clone(), format!("@[{ip}]:relaytest@{d}")),
        (from_ip.clone(), format!("@{srv}:relaytest@{d}")),
        (from_ip.clone(), format!("{d}!relaytest")),
        (from_ip.clone(), format!("{d}!relaytest@[{ip}]")),
        (from_ip.clone(), format!("{d}!relaytest@{srv}")),
    ];
    let sender = "alice@example.org".to_string();
    for rcpt in [
        // Our own literals, IPv4 and IPv6, and postmaster at them.
        format!("bob@[{ip}]"),
        "bob@[IPv6:::1]".to_string(),
        "bob@[IPv6:::ffff:127.0.0.1]".to_string(),
        format!("postmaster@[{ip}]"),
        "PostMaster@[IPv6:::1]".to_string(),
        "postmaster".to_string(),
        format!("postmaster@{srv}"),
        // Our domains, plainly and with smuggled routes.
        "bob@example.com".to_string(),
        "Bob@Sub.EXAMPLE.com".to_string(),
        "\"bob smith\"@example.com".to_string(),
        format!("bob%{d}@example.com"),
        format!("{d}!bob@example.com"),
        format!("\"bob@{d}\"@example.com"),
        format!("@{srv},@example.com:bob@example.com"),
        // A general literal (refused by syntax) and a trailing dot (likewise).
        "bob@[x400:c=us]".to_string(),
        "bob@example.com.".to_string(),
        // Another host's literals.
        "bob@[192.0.2.1]".to_string(),
        "bob@[IPv6:2001:db8::1]".to_string(),
    ] {
        v.push((sender.clone(), rcpt));
    }
    v
}

/// What `explain` says of one attempt: the reply, and for accepted mail the route
/// pattern and the address delivered to.
#[derive(Debug)]
struct Explained {
    reply: String,
    route: Option<(String, String)>,
}

fn explain(config: &std::path::Path, client_ip: &str, mail: &str, rcpt: &str) -> Explained {
    let out = Command::new(env!("CARGO_BIN_EXE_drawbridge"))
        .args(["explain", "--config"])
        .arg(config)
        .args(["--from-ip", client_ip, "--mail", mail, "--rcpt"])
        .arg(format!("<{rcpt}>"))
        .output()
        .expect("run drawbridge explain");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    let reply = text
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("decision: "))
        .unwrap_or_else(|| panic!("no decision in {text}"))
        .to_string();
    let route = text.lines().find_map(|l| {
        let rest = l.strip_prefix("delivery: route ")?;
        let (pattern, rest) = rest.split_once(" for ")?;
        let address = rest.rsplit_once("delivered to <")?.1.strip_suffix('>')?;
        Some((pattern.to_string(), address.to_string()))
    });
    assert_eq!(
        route.is_some(),
        reply.starts_with("250"),
        "an accepted recipient has a delivery line: {text}"
    );
    Explained { reply, route }
}

/// Sends each attempt in its own session from `client_ip`; accepted ones carry a
/// message whose subject names the attempt. Returns each RCPT reply, one line.
fn send_all(gw: &Gateway, client_ip: &str, attempts: &[(String, String)]) -> Vec<String> {
    let list: Vec<String> = attempts
        .iter()
        .map(|(m, r)| format!("({m:?}, {r:?})"))
        .collect();
    let out = python(&format!(
        r#"
import smtplib
attempts = [{list}]
for n, (mail, rcpt) in enumerate(attempts):
    with smtplib.SMTP(timeout=30, source_address=("{client_ip}", 0)) as s:
        s.connect("127.0.0.1", {port})
        s.ehlo("client.example.org")
        code, resp = s.docmd("MAIL", "FROM:<%s>" % mail)
        assert code == 250, (mail, code, resp)
        code, resp = s.docmd("RCPT", "TO:<%s>" % rcpt)
        print("%d %s" % (code, resp.decode().replace("\n", " ")))
        if code == 250:
            code, resp = s.data(("Subject: {client_ip} attempt %d\r\n\r\nrelay test\r\n" % n).encode())
            assert code == 250, (code, resp)
"#,
        list = list.join(", "),
        port = gw.inbound,
    ));
    out.lines().map(str::to_string).collect()
}

/// Runs every attempt from both clients against a gateway whose `*` route is `any`
/// (with `outer` the sink `*` leads to), and checks replies and deliveries against
/// `explain`.
fn check_every_attempt(tag: &str, any: &str, extra: &str, outer: &Sink, skip: fn(&str) -> bool) {
    let dir = TempDir::new(tag);
    let internal = Sink::start();
    let gw = Gateway::start(
        dir.path(),
        &format!(
            "set classify 10 remote {INTERNAL_IP}/32 category INTERNAL\n\
             set classify 20 remote 0.0.0.0/0 category EXTERNAL\n\
             set classify 30 remote ::/0 category EXTERNAL\n\
             set route example.com relay [127.0.0.1]:{int}\n\
             set route .example.com relay [127.0.0.1]:{int}\n\
             set route * {any}\n\
             {extra}\
             set relay-rule 10 source tcp_local destination tcp_local deny \"5.7.1 SMTP relaying not permitted\"\n",
            int = internal.addr.port(),
        ),
    );
    // Subject of each accepted message -> (route pattern, address) as explain said.
    let mut expected: BTreeMap<String, (String, String)> = BTreeMap::new();
    for client_ip in [EXTERNAL_IP, INTERNAL_IP] {
        let attempts: Vec<(String, String)> = attempts()
            .into_iter()
            .filter(|(_, r)| client_ip == EXTERNAL_IP || !skip(r))
            .collect();
        let replies = send_all(&gw, client_ip, &attempts);
        assert_eq!(replies.len(), attempts.len(), "{replies:?}");
        for (n, ((mail, rcpt), reply)) in attempts.iter().zip(&replies).enumerate() {
            let e = explain(&gw.config, client_ip, mail, rcpt);
            assert_eq!(
                reply, &e.reply,
                "{tag}: {client_ip} RCPT <{rcpt}>: the gateway said {reply}, explain {}",
                e.reply
            );
            let Some((pattern, address)) = e.route else {
                continue;
            };
            if client_ip == EXTERNAL_IP {
                assert_ne!(pattern, "*", "an EXTERNAL client relayed to <{rcpt}> by *");
            }
            let domain = rcpt.rsplit_once('@').map_or("", |(_, d)| d);
            if domain == "[127.0.0.1]" || domain.starts_with("[IPv6:::") {
                assert_ne!(pattern, "*", "our own literal <{rcpt}> went by *");
                assert!(
                    address.ends_with(&format!("@{HOST}")),
                    "{rcpt} -> {address}"
                );
            }
            expected.insert(format!("{client_ip} attempt {n}"), (pattern, address));
        }
    }
    let n_outer = expected.values().filter(|(p, _)| p == "*").count();
    let n_internal = expected.len() - n_outer;
    assert!(n_outer > 0 && n_internal > 0, "{expected:?}");
    outer.wait_for(n_outer);
    internal.wait_for(n_internal);
    // Give stray deliveries a moment to show up before counting.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let arrived: Vec<(bool, SinkMessage)> = outer
        .messages
        .lock()
        .unwrap()
        .iter()
        .map(|m| (true, m.clone()))
        .chain(
            internal
                .messages
                .lock()
                .unwrap()
                .iter()
                .map(|m| (false, m.clone())),
        )
        .collect();
    assert_eq!(arrived.len(), expected.len(), "{tag}: {arrived:#?}");
    for (by_any, m) in &arrived {
        let content = String::from_utf8_lossy(&m.content);
        let subject = content
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .expect("a subject")
            .to_string();
        let (pattern, address) = expected
            .get(&subject)
            .unwrap_or_else(|| panic!("{tag}: {subject} was not accepted, yet arrived"));
        assert_eq!(
            (pattern == "*", m.rcpts.clone()),
            (*by_any, vec![format!("<{address}>")]),
            "{tag}: {subject} arrived elsewhere than explain said ({pattern})"
        );
    }
}

fn keep_all(_: &str) -> bool {
    false
}

#[test]
fn every_relay_form_is_decided_and_delivered_as_explain_says_with_a_smarthost() {
    let smarthost = Sink::start();
    check_every_attempt(
        "open-relay-smarthost",
        &format!("smarthost [127.0.0.1]:{}", smarthost.addr.port()),
        "",
        &smarthost,
        keep_all,
    );
}

/// With `* mx`, another host's literal would be delivered to that host: the test sends
/// traffic to loopback only, so the INTERNAL client does not try those.
fn foreign_literal(rcpt: &str) -> bool {
    rcpt.contains("[192.0.2.1]") || rcpt.contains("[IPv6:2001:db8::1]")
}

#[test]
fn every_relay_form_is_decided_and_delivered_as_explain_says_with_mx_routing() {
    let mx = Sink::start();
    let dns = Dnsmasq::start(&[
        &format!("--mx-host={FOREIGN},mx.{FOREIGN},10"),
        &format!("--host-record=mx.{FOREIGN},127.0.0.1"),
    ]);
    check_every_attempt(
        "open-relay-mx",
        "mx",
        &format!(
            "set system dns resolver {}\nset route * mx-port {}\n",
            dns.addr,
            mx.addr.port()
        ),
        &mx,
        foreign_literal,
    );
}
