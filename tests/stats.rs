//! The counters after a known mix of mail: accepted, refused, deferred and bounced, a TLS
//! session, a failed and a good authentication. Every counter is checked, through
//! `drawbridge stats --json` and the console's `show stats`, since the start and since
//! `clear stats`.

mod common;

use common::*;

const POLICY: &str = "set classify 10 remote 127.0.0.2 category INTERNAL\n\
                      set classify 20 remote 0.0.0.0/0 category EXTERNAL\n\
                      set service inbound auth yes\n";

/// The counters as JSON, read with Python's json module: each path picks one value.
fn counters(gw: &Gateway, paths: &[&str]) -> Vec<String> {
    let (ok, out, err) = gw.cli(&["stats", "--json"]);
    assert!(ok, "{err}");
    let prints: String = paths
        .iter()
        .map(|p| format!("print(json.dumps(d{p}, sort_keys=True))\n"))
        .collect();
    python(&format!("import json\nd = json.loads({out:?})\n{prints}"))
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn every_counter_after_a_known_mix_of_mail() {
    let dir = TempDir::new("stats");
    let sink = Sink::start_on(
        0,
        SinkBehaviour {
            reject: vec!["gone@example.com".into()],
            defer: vec!["later@example.com".into()],
            ..SinkBehaviour::default()
        },
    );
    add_user(&dir.path().join("state"), "alice", "correct horse", false);
    let gw = Gateway::start(
        dir.path(),
        &format!(
            "{POLICY}set route example.com relay [127.0.0.1]:{port}\n\
             set route * smarthost [127.0.0.1]:{port}\n\
             set queue retry 1h\n",
            port = sink.addr.port()
        ),
    );
    let out = python(&format!(
        r#"
import smtplib, ssl
def session():
    s = smtplib.SMTP("127.0.0.1", {port}, timeout=30, source_address=("127.0.0.3", 0))
    s.ehlo("client.example.org")
    return s
# Accepted and delivered, with one recipient refused: not our domain, no login.
s = session()
s.mail("alice@example.org")
print("rcpt", s.rcpt("bob@example.com")[0], s.rcpt("eve@example.net")[0])
s.data(b"Subject: one\r\n\r\nhello\r\n")
s.quit()
# Accepted, then refused for good by the next hop: a bounce (to nobody: null sender).
s = session()
s.sendmail("", ["gone@example.com"], b"Subject: two\r\n\r\nhello\r\n")
s.quit()
# Accepted, then deferred by the next hop.
s = session()
s.sendmail("alice@example.org", ["later@example.com"], b"Subject: three\r\n\r\nhello\r\n")
s.quit()
# TLS, a failed login, a good one, and relayed mail.
s = session()
s.starttls(context=ssl._create_unverified_context())
s.ehlo("client.example.org")
s.user, s.password = "alice", "wrong"
try:
    s.auth("PLAIN", s.auth_plain)
except smtplib.SMTPAuthenticationError as e:
    print("bad", e.smtp_code)
s.user, s.password = "alice", "correct horse"
s.auth("PLAIN", s.auth_plain)
s.sendmail("alice@example.org", ["eve@example.net"], b"Subject: four\r\n\r\nhello\r\n")
s.quit()
"#,
        port = gw.inbound
    ));
    assert!(out.contains("rcpt 250 550"), "{out}");
    assert!(out.contains("bad 535"), "{out}");
    sink.wait_for(2);
    // The sink has a message before the gateway has its 250: wait for the log line.
    gw.wait_for_log_count("status=sent", 2);
    gw.wait_for_log("status=bounced");
    gw.wait_for_log("status=deferred");

    let got = counters(
        &gw,
        &[
            "['since_start']['inbound']['connections']",
            "['since_start']['inbound']['accepted']",
            "['since_start']['inbound']['rejected']",
            "['since_start']['inbound']['tls']",
            "['since_start']['inbound']['auth_succeeded']",
            "['since_start']['inbound']['auth_failed']",
            "['since_start']['delivered']",
            "['since_start']['deferred']",
            "['since_start']['bounced']",
            "['since_start']['tls_out']",
            "['since_start']['outbound']",
            "['cleared']",
            "['since_clear'] == d['since_start']",
        ],
    );
    assert_eq!(
        got,
        [
            "4",
            "4",
            r#"{"AUTH 535 5.7.8": 1, "RCPT 550 5.7.1": 1}"#,
            r#"{"TLSv1.3": 1}"#,
            r#"{"PLAIN": 1}"#,
            r#"{"PLAIN": 1}"#,
            "2",
            "1",
            "1",
            "{}",
            r#"{"accepted": 0, "auth_failed": {}, "auth_succeeded": {}, "connections": 0, "rejected": {}, "tls": {}}"#,
            "null",
            "true",
        ]
    );

    // The console shows the same, a counter a line: since the start and since a clear.
    let shown = gw.console_script("show stats\nclear stats\nshow stats | match accepted\n");
    let row = |name: &str| -> Vec<String> {
        shown
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no row {name}: {shown}"))
            .split_whitespace()
            .rev()
            .take(2)
            .map(str::to_string)
            .collect()
    };
    assert_eq!(row("inbound rejected RCPT 550 5.7.1"), ["1", "1"]);
    assert_eq!(row("bounced"), ["1", "1"]);
    assert!(shown.contains("Counters cleared"), "{shown}");
    let after_clear: Vec<&str> = shown
        .lines()
        .filter(|l| l.starts_with("inbound accepted"))
        .collect();
    assert_eq!(after_clear.len(), 2, "{shown}");
    assert_eq!(
        after_clear[1].split_whitespace().collect::<Vec<_>>(),
        ["inbound", "accepted", "4", "0"]
    );

    // After the clear, one more message counts in both.
    python(&format!(
        r#"
import smtplib
s = smtplib.SMTP("127.0.0.1", {port}, timeout=30, source_address=("127.0.0.3", 0))
s.sendmail("alice@example.org", ["bob@example.com"], b"Subject: five\r\n\r\nhello\r\n")
s.quit()
"#,
        port = gw.inbound
    ));
    gw.wait_for_log_count("status=sent", 3);
    let got = counters(
        &gw,
        &[
            "['since_clear']['inbound']['accepted']",
            "['since_start']['inbound']['accepted']",
            "['since_clear']['inbound']['rejected']",
            "['since_clear']['delivered']",
            "['since_start']['delivered']",
            "['cleared'] is not None",
        ],
    );
    assert_eq!(got, ["1", "5", "{}", "1", "3", "true"]);
}
