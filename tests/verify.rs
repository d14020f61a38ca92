//! Recipient verification at the inbound door, through the gateway: unknown users are
//! refused at RCPT (no backscatter), known ones accepted, answers cached, and the
//! configured behaviour when the internal servers are down.

mod common;

use common::*;

fn config(port: u16, extra: &str) -> String {
    format!(
        "set route example.com relay [127.0.0.1]:{port}\n\
         set service inbound verify-recipients yes\n{extra}"
    )
}

/// RCPT replies for each recipient, one line each: `addr code text`.
fn rcpt_replies(gw: &Gateway, rcpts: &[&str]) -> String {
    let list = rcpts
        .iter()
        .map(|r| format!("\"{r}\""))
        .collect::<Vec<_>>()
        .join(",");
    python(&format!(
        r#"
import smtplib
with smtplib.SMTP("127.0.0.1", {port}, timeout=30) as s:
    s.ehlo("client.example.org")
    s.mail("alice@example.org")
    for r in [{list}]:
        code, text = s.rcpt(r)
        print(r, code, text.decode())
"#,
        port = gw.inbound
    ))
}

#[test]
fn unknown_recipients_are_refused_at_the_door_and_answers_are_cached() {
    let dir = TempDir::new("verify");
    let sink = Sink::start_on(
        0,
        SinkBehaviour {
            reject: vec!["nobody@example.com".into()],
            ..Default::default()
        },
    );
    let gw = Gateway::start(dir.path(), &config(sink.addr.port(), ""));
    let out = rcpt_replies(&gw, &["bob@example.com", "nobody@example.com"]);
    assert!(out.contains("bob@example.com 250 2.1.5 Ok"), "{out}");
    assert!(
        out.contains("nobody@example.com 550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown"),
        "{out}"
    );
    let again = rcpt_replies(&gw, &["BOB@example.com", "nobody@example.com"]);
    assert!(again.contains("BOB@example.com 250"), "{again}");
    assert!(again.contains("nobody@example.com 550 5.1.1"), "{again}");
    gw.wait_for_log("verify <BOB@example.com>: exists (cached)");
    gw.wait_for_log("verify <nobody@example.com>: refused (cached)");
    // Nothing was accepted for the unknown user, so nothing can bounce.
    assert!(sink.messages.lock().unwrap().is_empty());
}

#[test]
fn with_the_internal_servers_down_rcpt_is_deferred_or_accepted_as_configured() {
    let dir = TempDir::new("verify-down");
    let dead = free_port();
    let gw = Gateway::start(dir.path(), &config(dead, ""));
    let out = rcpt_replies(&gw, &["bob@example.com"]);
    assert!(
        out.contains("bob@example.com 451 4.4.3 Recipient verification temporarily unavailable"),
        "{out}"
    );
    drop(gw);

    let dir = TempDir::new("verify-down-accept");
    let gw = Gateway::start(
        dir.path(),
        &config(dead, "set service inbound verify-unreachable accept\n"),
    );
    let out = rcpt_replies(&gw, &["bob@example.com"]);
    assert!(out.contains("bob@example.com 250"), "{out}");
    gw.wait_for_log("verify <bob@example.com>: no internal host reachable");
}
