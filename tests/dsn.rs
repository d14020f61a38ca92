//! Bounces and delay notices end to end: the sender's next hop receives exactly one
//! RFC 3464 report, parsed back here with Python's `email` package; never one for the
//! null sender.

mod common;

use common::*;

/// example.com goes to `rcpt_port`; the senders' domain example.org to `sender_port`.
fn config(rcpt_port: u16, sender_port: u16, extra: &str) -> String {
    format!(
        "set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
         set route example.com relay [127.0.0.1]:{rcpt_port}\n\
         set route example.com avoid-time 0s\n\
         set route example.org relay [127.0.0.1]:{sender_port}\n\
         set queue retry \"1s\"\n{extra}"
    )
}

fn send(gw: &Gateway, from: &str, to: &str, ret: &str) {
    python(&format!(
        r#"
import smtplib
with smtplib.SMTP("127.0.0.1", {port}, timeout=30) as s:
    s.ehlo("client.example.org")
    code, _ = s.docmd("MAIL FROM:<{from}>{ret}")
    assert code == 250
    assert s.rcpt("{to}")[0] == 250
    code, _ = s.data(b"From: <{from}>\r\nSubject: original subject\r\n\r\nthe original body\r\n")
    assert code == 250
"#,
        port = gw.inbound
    ));
}

/// Parses a report with Python's email package; prints the facts the tests check.
fn parse_report(content: &[u8]) -> String {
    let path = std::env::temp_dir().join(format!(
        "drawbridge-dsn-{}-{}",
        std::process::id(),
        content.len()
    ));
    std::fs::write(&path, content).unwrap();
    let out = python(&format!(
        r#"
import email
from email import policy
m = email.message_from_bytes(open("{path}", "rb").read())
print("type", m.get_content_type(), m.get_param("report-type"))
print("subject", m["Subject"])
parts = m.get_payload()
print("parts", [p.get_content_type() for p in parts])
status = parts[1].get_payload()
for block in status[1:]:
    print("action", block["Action"], "status", block["Status"], "rcpt", block["Final-Recipient"])
returned = parts[2]
print("returned", returned.get_content_type(), "original subject" in returned.as_string(), "the original body" in returned.as_string())
"#,
        path = path.display()
    ));
    let _ = std::fs::remove_file(&path);
    out
}

#[test]
fn a_permanent_failure_returns_exactly_one_report_to_the_sender() {
    let dir = TempDir::new("dsn-fail");
    let rcpt = Sink::start_on(
        0,
        SinkBehaviour {
            reject: vec!["nobody@example.com".into()],
            ..Default::default()
        },
    );
    let sender = Sink::start();
    let gw = Gateway::start(
        dir.path(),
        &config(rcpt.addr.port(), sender.addr.port(), ""),
    );
    send(&gw, "alice@example.org", "nobody@example.com", " RET=FULL");
    let reports = sender.wait_for(1);
    assert_eq!(
        reports[0].mail.split_whitespace().next(),
        Some("<>"),
        "{}",
        reports[0].mail
    );
    assert_eq!(reports[0].rcpts, ["<alice@example.org>"]);
    let facts = parse_report(&reports[0].content);
    assert!(
        facts.contains("type multipart/report delivery-status"),
        "{facts}"
    );
    assert!(
        facts.contains("subject Undelivered Mail Returned to Sender"),
        "{facts}"
    );
    assert!(
        facts.contains("parts ['text/plain', 'message/delivery-status', 'message/rfc822']"),
        "{facts}"
    );
    assert!(
        facts.contains("action failed status 5.1.1 rcpt rfc822; nobody@example.com"),
        "{facts}"
    );
    assert!(
        facts.contains("returned message/rfc822 True True"),
        "{facts}"
    );
    gw.wait_for_log("sender non-delivery notification");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(sender.count(), 1, "exactly one report");
}

#[test]
fn an_expired_message_returns_one_report_with_headers_only() {
    let dir = TempDir::new("dsn-expire");
    let dead = free_port();
    let sender = Sink::start();
    let gw = Gateway::start(
        dir.path(),
        &config(dead, sender.addr.port(), "set queue max-lifetime 2s\n"),
    );
    send(&gw, "alice@example.org", "bob@example.com", "");
    let reports = sender.wait_for(1);
    let facts = parse_report(&reports[0].content);
    assert!(
        facts.contains("action failed status 5.4.7 rcpt rfc822; bob@example.com"),
        "{facts}"
    );
    assert!(
        facts.contains("returned text/rfc822-headers True False"),
        "{facts}"
    );
    gw.wait_for_log("status=expired");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(sender.count(), 1, "exactly one report");
}

#[test]
fn the_null_sender_never_gets_a_report() {
    let dir = TempDir::new("dsn-null");
    let rcpt = Sink::start_on(
        0,
        SinkBehaviour {
            reject: vec!["nobody@example.com".into()],
            ..Default::default()
        },
    );
    let sender = Sink::start();
    let gw = Gateway::start(
        dir.path(),
        &config(rcpt.addr.port(), sender.addr.port(), ""),
    );
    send(&gw, "", "nobody@example.com", "");
    gw.wait_for_log("status=bounced (550 5.1.1 User unknown)");
    gw.wait_for_log(": removed");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(sender.count(), 0);
    assert!(!gw.log_text().contains("notification"), "{}", gw.log_text());
}

#[test]
fn a_long_delay_sends_one_delay_notice() {
    let dir = TempDir::new("dsn-delay");
    let dead = free_port();
    let sender = Sink::start();
    let gw = Gateway::start(
        dir.path(),
        &config(dead, sender.addr.port(), "set queue delay-notice 1s\n"),
    );
    send(&gw, "alice@example.org", "bob@example.com", "");
    let reports = sender.wait_for(1);
    let facts = parse_report(&reports[0].content);
    assert!(
        facts.contains("subject Delayed Mail (still being retried)"),
        "{facts}"
    );
    assert!(
        facts.contains("action delayed status 4.4.1 rcpt rfc822; bob@example.com"),
        "{facts}"
    );
    // More retries come and go; the sender hears once.
    wait_until("three more attempts", || {
        gw.log_text().matches("to=<bob@example.com>").count() >= 4
    });
    assert_eq!(sender.count(), 1);
}
