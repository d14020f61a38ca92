//! The log as a Postfix administrator reads it: the line shapes pflogsumm and grep habits
//! rely on (`client=`, `message-id=`, `from=`, `to=`, `relay=HOST[IP]:PORT`, `delay=`,
//! `delays=a/b/c/d`, `conn_use=`, `dsn=`, `status=`, `NOQUEUE: reject: … to=<…>`),
//! clients named by a forward-confirmed PTR lookup, the real reason of a deferral kept
//! while a failed host is passed over, and pflogsumm's own summary of a mixed run.

mod common;

use std::net::Ipv4Addr;
use std::process::Command;

use common::*;

/// The client with a PTR record and a matching address record.
const NAMED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
/// A client whose PTR name does not resolve back to it.
const LIAR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

fn dns() -> Dnsmasq {
    Dnsmasq::start(&[
        "--host-record=client.example.test,127.0.0.5",
        "--ptr-record=6.0.0.127.in-addr.arpa,liar.example.test",
        "--mx-host=example.net,mx1.example.net,10",
        "--host-record=mx1.example.net,127.0.0.1",
    ])
}

/// One SMTP session from `from`: each message is (recipients, content); the replies to
/// every RCPT and to each message's end, one per line.
fn session(gw: &Gateway, from: Ipv4Addr, messages: &[(&[&str], &str)]) -> String {
    let stream = connect_from(from, gw.inbound_addr()).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut raw = Raw { stream };
    let mut out = raw.replies(1);
    raw.send(b"EHLO client.example.test\r\n");
    out += &raw.replies(1);
    for (rcpts, content) in messages {
        raw.send(b"MAIL FROM:<alice@example.com>\r\n");
        out += &raw.replies(1);
        let mut accepted = 0;
        for r in *rcpts {
            raw.send(format!("RCPT TO:<{r}>\r\n").as_bytes());
            let reply = raw.replies(1);
            accepted += usize::from(reply.starts_with("250"));
            out += &reply;
        }
        if accepted == 0 {
            raw.send(b"RSET\r\n");
            out += &raw.replies(1);
            continue;
        }
        raw.send(b"DATA\r\n");
        out += &raw.replies(1);
        raw.send(format!("{content}\r\n.\r\n").as_bytes());
        out += &raw.replies(1);
    }
    raw.send(b"QUIT\r\n");
    out += &raw.replies(1);
    out
}

fn message(id: &str) -> String {
    format!("Message-ID: <{id}@client.example.test>\r\nSubject: logs\r\n\r\nhello")
}

/// The queue id a `250 2.0.0 Ok: queued as ID` reply names, in order.
fn queue_ids(replies: &str) -> Vec<String> {
    replies
        .lines()
        .filter_map(|l| l.strip_prefix("250 2.0.0 Ok: queued as "))
        .map(|id| id.trim().to_string())
        .collect()
}

/// The one log line that contains every needle.
fn line_with(log: &str, needles: &[&str]) -> String {
    let found: Vec<&str> = log
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect();
    assert_eq!(found.len(), 1, "one line with {needles:?} in:\n{log}");
    found[0].to_string()
}

/// The value of `key=` in a comma-separated Postfix line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let at = line
        .find(&format!(" {key}="))
        .unwrap_or_else(|| panic!("{key}= in {line}"));
    let rest = &line[at + key.len() + 2..];
    rest.split([',', ' ']).next().unwrap()
}

#[test]
fn the_log_of_a_mixed_run_reads_like_postfix_and_pflogsumm_counts_it() {
    let dir = TempDir::new("postfix-logs");
    let sink = Sink::start_on(
        0,
        SinkBehaviour {
            reject: vec!["gone@example.com".into()],
            defer: vec!["later@example.com".into()],
            ..SinkBehaviour::default()
        },
    );
    let port = sink.addr.port();
    let dns = dns();
    let gw = Gateway::start(
        dir.path(),
        &format!(
            "set system dns resolver {}\n\
             set system dns client-names yes\n\
             set classify 10 remote 127.0.0.5 category INTERNAL\n\
             set route example.com relay [127.0.0.1]:{port}\n\
             set route example.net mx\n\
             set route example.net mx-port {port}\n\
             set queue retry 1h\n",
            dns.addr
        ),
    );

    // The named client: one message by MX, two to the relay (the second once the first
    // is delivered, so that it finds the connection idle and reuses it), one bounced by
    // the next hop and one deferred by it.
    let first = session(
        &gw,
        NAMED,
        &[
            (&["bob@example.net"], &message("mx")),
            (&["carol@example.com"], &message("one")),
        ],
    );
    let mut ids = queue_ids(&first);
    assert_eq!(ids.len(), 2, "{first}");
    gw.wait_for_log(&format!("{}: to=<carol@example.com>", ids[1]));
    let second = session(
        &gw,
        NAMED,
        &[
            (&["dave@example.com"], &message("two")),
            (&["gone@example.com"], &message("bounce")),
            (&["later@example.com"], &message("defer")),
        ],
    );
    ids.extend(queue_ids(&second));
    assert_eq!(ids.len(), 5, "{second}");
    // The liar is not named, and is refused relaying.
    let refused = session(&gw, LIAR, &[(&["eve@evil.test"], "x")]);
    assert!(refused.contains(" 5.7.1 "), "{refused}");
    sink.wait_for(4);
    gw.wait_for_log(&format!("{}: to=<later@example.com>", ids[4]));
    gw.wait_for_log(&format!("{}: removed", ids[3]));
    let log = gw.log_text();

    // Clients by name, where DNS confirms it.
    assert_eq!(
        log.matches(": connect from client.example.test[127.0.0.5]")
            .count(),
        2,
        "{log}"
    );
    line_with(&log, &[&ids[0], "client=client.example.test[127.0.0.5]"]);
    line_with(&log, &[": connect from unknown[127.0.0.6]"]);
    let received = String::from_utf8_lossy(&sink.messages.lock().unwrap()[0].content).to_string();
    assert!(
        received.contains("(client.example.test [127.0.0.5])"),
        "{received}"
    );

    // The reject line, with the recipient.
    line_with(
        &log,
        &[
            "NOQUEUE: reject: RCPT from unknown[127.0.0.6]: 5",
            "; from=<alice@example.com> to=<eve@evil.test> proto=ESMTP helo=<client.example.test>",
        ],
    );

    // message-id= per message, as written.
    line_with(&log, &[&ids[0], "message-id=<mx@client.example.test>"]);

    // The MX host by name; the relay by its literal.
    let mx = line_with(&log, &[&ids[0], "to=<bob@example.net>"]);
    assert_eq!(
        field(&mx, "relay"),
        format!("mx1.example.net[127.0.0.1]:{port}")
    );
    let one = line_with(&log, &[&ids[1], "to=<carol@example.com>"]);
    assert_eq!(field(&one, "relay"), format!("127.0.0.1[127.0.0.1]:{port}"));

    // delay= is the sum of delays=a/b/c/d, each with two decimals as Postfix prints them.
    for line in [&mx, &one] {
        let delay: f64 = field(line, "delay").parse().unwrap();
        let parts: Vec<f64> = field(line, "delays")
            .split('/')
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(parts.len(), 4, "{line}");
        let sum: f64 = parts.iter().sum();
        assert!((sum - delay).abs() < 0.05, "{line}");
        assert_eq!(field(line, "dsn"), "2.0.0");
        assert!(
            line.contains("status=sent (250 2.0.0 Ok: queued)"),
            "{line}"
        );
    }
    // The second message to the relay reused the first one's connection.
    let two = line_with(&log, &[&ids[2], "to=<dave@example.com>"]);
    assert_eq!(field(&two, "conn_use"), "2", "{two}");
    assert!(!one.contains("conn_use="), "{one}");

    // The next hop's own words for a bounce and a deferral.
    let bounce = line_with(&log, &[&ids[3], "to=<gone@example.com>"]);
    assert!(
        bounce.contains("dsn=5.1.1, status=bounced (550 5.1.1 User unknown)"),
        "{bounce}"
    );
    let defer = line_with(&log, &[&ids[4], "to=<later@example.com>"]);
    assert!(
        defer.contains("dsn=4.2.0, status=deferred (450 4.2.0 Try again later)"),
        "{defer}"
    );

    // No Rust debug formatting anywhere.
    for bad in ["Some(", "None", "{ ", "Denied"] {
        assert!(!log.contains(bad), "{bad} in:\n{log}");
    }

    // pflogsumm itself: five received; four delivered (three, and the bounce notice to
    // the sender); one deferred, one bounced, one rejected.
    let summary = Command::new("pflogsumm")
        .args(["--syslog-name=drawbridge", "--problems-first"])
        .arg(dir.path().join("gateway.log"))
        .output()
        .expect("run pflogsumm");
    assert!(summary.status.success());
    let text = String::from_utf8_lossy(&summary.stdout);
    let count = |what: &str| -> u32 {
        text.lines()
            .find_map(|l| {
                let mut words = l.split_whitespace();
                let n = words.next()?;
                (words.next()? == what).then(|| n.parse().ok()).flatten()
            })
            .unwrap_or_else(|| panic!("no `{what}` count in:\n{text}"))
    };
    assert_eq!(count("received"), 5, "{text}");
    assert_eq!(count("delivered"), 4, "{text}");
    assert_eq!(count("deferred"), 1, "{text}");
    assert_eq!(count("bounced"), 1, "{text}");
    assert_eq!(count("rejected"), 1, "{text}");
    // Deliveries by recipient domain, with their delays.
    let by_domain = text
        .lines()
        .find(|l| l.trim_end().ends_with(" example.net"))
        .unwrap_or_else(|| panic!("no delivery line for example.net in:\n{text}"));
    assert!(by_domain.trim_start().starts_with("1 "), "{by_domain}");
}

#[test]
fn a_passed_over_host_keeps_its_real_reason_and_is_tried_again_at_the_next_retry() {
    let dir = TempDir::new("postfix-logs-avoid");
    let dead = free_port();
    let gw = Gateway::start(
        dir.path(),
        &format!(
            "set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
             set route example.org relay [127.0.0.1]:{dead}\n\
             set route example.org avoid-time 1h\n\
             set queue retry 2s\n"
        ),
    );
    let replies = session(
        &gw,
        Ipv4Addr::LOCALHOST,
        &[
            (&["a@example.org"], &message("a")),
            (&["b@example.org"], &message("b")),
        ],
    );
    let ids = queue_ids(&replies);
    assert_eq!(ids.len(), 2, "{replies}");
    let host = format!("127.0.0.1[127.0.0.1]:{dead}");
    gw.wait_for_log(&format!("{}: to=<b@example.org>", ids[1]));
    let log = gw.log_text();
    for id in &ids {
        let line = line_with(&log, &[id, "status=deferred"]);
        assert!(
            line.contains(&format!("(451 4.4.1 connect to {host}: Connection refused")),
            "{line}"
        );
        assert!(!line.contains("passed over"), "{line}");
    }
    // An avoid time longer than the retry interval is cut to it: the retry connects.
    gw.wait_for_log_count(&format!("connect to {host}"), 2);
}
