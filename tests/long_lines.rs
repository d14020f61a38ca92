//! Long lines: real mail (HTML newsletters, signed mail) has lines far over RFC 5321's
//! 1000 octets. They are taken up to `max-line-length` (64 KiB by default) and relayed
//! unchanged; the 1000-octet limit stays an option.

mod common;

use common::*;

fn send(port: u16, line_len: usize) -> String {
    python(&format!(
        r#"
import smtplib
body = b"Subject: long line\r\n\r\n" + b"x" * {line_len} + b"\r\nend\r\n"
with smtplib.SMTP("127.0.0.1", {port}) as s:
    try:
        s.sendmail("a@example.org", ["bob@example.com"], body)
        print("accepted")
    except smtplib.SMTPDataError as e:
        print("refused", e.smtp_code, e.smtp_error.decode())
"#
    ))
}

#[test]
fn a_line_of_5000_octets_is_relayed_byte_identical() {
    let dir = TempDir::new("long-lines");
    let sink = Sink::start();
    let gw = Gateway::start(
        dir.path(),
        &format!(
            "set route example.com relay [127.0.0.1]:{}\n",
            sink.addr.port()
        ),
    );
    assert_eq!(send(gw.inbound, 5000).trim(), "accepted");
    let msgs = sink.wait_for(1);
    let line = format!("{}\r\n", "x".repeat(5000));
    let content = String::from_utf8_lossy(&msgs[0].content);
    assert!(content.contains(&line), "{} octets", content.len());
    assert!(content.ends_with("\r\nend\r\n"));
    // Past the limit (64 KiB with CRLF) it is refused for good, and nothing is queued.
    let refused = send(gw.inbound, 70_000);
    assert!(refused.starts_with("refused 5"), "{refused}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(sink.count(), 1);
}

#[test]
fn the_rfc_limit_of_1000_octets_stays_an_option() {
    let dir = TempDir::new("long-lines-strict");
    let sink = Sink::start();
    let gw = Gateway::start(
        dir.path(),
        &format!(
            "set route example.com relay [127.0.0.1]:{}\nset service inbound max-line-length 1000\n",
            sink.addr.port()
        ),
    );
    let refused = send(gw.inbound, 5000);
    assert!(refused.contains("longer than 1000 octets"), "{refused}");
    assert_eq!(send(gw.inbound, 998).trim(), "accepted");
}
