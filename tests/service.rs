//! The SMTP service over real TCP: relay refusal, connection limits, early talkers,
//! smuggling attempts, pipelining, and a load from Postfix's smtp-source.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn relay_to(port: u16) -> String {
    format!(
        "set route example.com relay [127.0.0.1]:{port}\n\
         set route .example.com relay [127.0.0.1]:{port}\n"
    )
}

#[test]
fn an_external_client_reaches_only_our_domains_and_an_internal_one_relays() {
    let dir = TempDir::new("closed");
    let sink = Sink::start();
    // Only 127.0.0.2 is internal here; 127.0.0.3 is the outside world.
    let extra = format!(
        "set classify 10 remote 127.0.0.2 category INTERNAL\n\
         set classify 20 remote 0.0.0.0/0 category EXTERNAL\n\
         set route * smarthost [127.0.0.1]:{0}\n{1}",
        sink.addr.port(),
        relay_to(sink.addr.port())
    );
    let gw = Gateway::start(dir.path(), &extra);
    let script = |src: &str| {
        format!(
            r#"
import smtplib
with smtplib.SMTP("127.0.0.1", {port}, timeout=30, source_address=("{src}", 0)) as s:
    s.ehlo("c.example.org")
    print(s.mail("a@example.org"))
    for r in ["bob@example.com", "eve@example.net", "x@sub.example.com"]:
        print(r, s.rcpt(r))
"#,
            port = gw.inbound
        )
    };
    let outside = python(&script("127.0.0.3"));
    assert!(
        outside.contains("bob@example.com (250, b'2.1.5 Ok')"),
        "{outside}"
    );
    assert!(
        outside.contains("eve@example.net (550, b'5.7.1 <eve@example.net>: Relay access denied')"),
        "{outside}"
    );
    assert!(outside.contains("x@sub.example.com (250"), "{outside}");
    let inside = python(&script("127.0.0.2"));
    assert!(
        inside.contains("eve@example.net (250, b'2.1.5 Ok')"),
        "{inside}"
    );
    gw.wait_for_log("NOQUEUE: reject: RCPT from unknown[127.0.0.3]: 550 5.7.1 <eve@example.net>: Relay access denied");
}

#[test]
fn a_denied_classification_refuses_the_connection() {
    let dir = TempDir::new("deny");
    let gw = Gateway::start(
        dir.path(),
        "set classify 10 remote 127.0.0.0/8 deny \"no service for you\"\n",
    );
    let mut raw = Raw::connect(gw.inbound_addr());
    let text = raw.until_close();
    assert_eq!(text, "554 5.7.1 no service for you\r\n");
}

#[test]
fn connection_limits_per_client_and_in_total_are_enforced() {
    let dir = TempDir::new("limits");
    let gw = Gateway::start(
        dir.path(),
        "set service inbound max-connections-per-ip 2\nset service outbound max-connections 1\n",
    );
    let mut a = Raw::connect(gw.inbound_addr());
    let mut b = Raw::connect(gw.inbound_addr());
    assert!(a.replies(1).starts_with("220 "));
    assert!(b.replies(1).starts_with("220 "));
    let mut c = Raw::connect(gw.inbound_addr());
    assert_eq!(
        c.until_close(),
        "421 4.7.0 gw.example.com Error: too many connections from 127.0.0.1\r\n"
    );
    // A place freed is a place given again.
    a.send(b"QUIT\r\n");
    assert!(a.until_close().contains("221 2.0.0"));
    wait_until("the slot to be given back", || {
        let mut d = Raw::connect(gw.inbound_addr());
        d.replies(1).starts_with("220 ")
    });

    let out = std::net::SocketAddr::from(([127, 0, 0, 1], gw.outbound));
    let mut first = Raw::connect(out);
    assert!(first.replies(1).starts_with("220 "));
    let mut second = Raw::connect(out);
    assert_eq!(
        second.until_close(),
        "421 4.7.0 gw.example.com Error: too many connections\r\n"
    );
}

#[test]
fn a_client_that_talks_before_the_greeting_is_refused() {
    let dir = TempDir::new("early");
    let gw = Gateway::start(dir.path(), "set service inbound greet-delay 2s\n");
    let mut raw = Raw::connect(gw.inbound_addr());
    raw.send(b"EHLO spammer.example\r\n");
    let text = raw.until_close();
    assert!(text.starts_with("554 5.5.1"), "{text}");
    assert!(!text.contains("220 "), "{text}");
    gw.wait_for_log("talked before the greeting from unknown[127.0.0.1]");
    // A patient client is served.
    let mut ok = Raw::connect(gw.inbound_addr());
    assert!(ok.replies(1).starts_with("220 gw.example.com ESMTP"));
}

#[test]
fn smtp_smuggling_with_bare_line_feeds_queues_nothing() {
    let dir = TempDir::new("smuggle");
    let sink = Sink::start();
    let gw = Gateway::start(
        dir.path(),
        &format!(
            "set classify 10 remote 127.0.0.0/8 category INTERNAL\n{}",
            relay_to(sink.addr.port())
        ),
    );
    let mut raw = Raw::connect(gw.inbound_addr());
    raw.replies(1);
    raw.send(
        b"EHLO c.example.org\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n",
    );
    let text = raw.replies(4);
    assert!(
        text.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n"),
        "{text}"
    );
    raw.send(
        b"Subject: hi\r\n\r\nbody\n.\nMAIL FROM:<evil@example.org>\nRCPT TO:<victim@example.com>\nDATA\nSubject: smuggled\n\n.\n\r\n.\r\n",
    );
    let text = raw.replies(1);
    assert!(text.starts_with("550 5.5.2"), "{text}");
    raw.send(b"QUIT\r\n");
    assert!(raw.replies(1).contains("221"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(sink.count(), 0);
    assert!(gw.queue_files().is_empty(), "{:?}", gw.queue_files());
}

#[test]
fn pipelined_commands_get_their_replies_in_order_in_one_batch() {
    let dir = TempDir::new("pipeline");
    let sink = Sink::start();
    let gw = Gateway::start(dir.path(), &relay_to(sink.addr.port()));
    let mut raw = Raw::connect(gw.inbound_addr());
    raw.replies(1);
    raw.send(b"EHLO c.example.org\r\n");
    let ehlo = raw.replies(1);
    assert!(ehlo.contains("250-PIPELINING\r\n"), "{ehlo}");
    raw.send(
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<one@example.com>\r\nRCPT TO:<x@elsewhere.test>\r\nRCPT TO:<two@example.com>\r\nDATA\r\n",
    );
    let text = raw.replies(5);
    let codes: Vec<&str> = text
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| &l[..3])
        .collect();
    assert_eq!(codes, ["250", "250", "550", "250", "354"], "{text}");
    raw.send(b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    let text = raw.replies(2);
    assert!(text.starts_with("250 2.0.0 Ok: queued as "), "{text}");
    assert!(text.ends_with("221 2.0.0 Bye\r\n"), "{text}");
    let msgs = sink.wait_for(1);
    assert_eq!(msgs[0].rcpts, ["<one@example.com>", "<two@example.com>"]);
}

#[test]
fn postfix_smtp_source_load_arrives_complete_at_smtp_sink() {
    let dir = TempDir::new("load");
    let sink = PostfixSink::start(dir.path());
    let gw = Gateway::start(
        dir.path(),
        &format!(
            "set classify 10 remote 127.0.0.0/8 category INTERNAL\n{}",
            relay_to(sink.port)
        ),
    );
    let status = Command::new("/usr/sbin/smtp-source")
        .args([
            "-s",
            "5",
            "-m",
            "200",
            "-l",
            "2048",
            "-f",
            "load@example.org",
            "-t",
            "rcpt@example.com",
        ])
        .arg(format!("127.0.0.1:{}", gw.inbound))
        .status()
        .expect("smtp-source (Debian package postfix)");
    assert!(status.success());
    wait_until("200 messages at smtp-sink", || sink.dumps().len() >= 200);
    wait_until("200 deliveries in the log", || {
        gw.log_text().matches("status=sent").count() >= 200
    });
    wait_until("200 removals in the log", || {
        gw.log_text().matches(": removed").count() >= 200
    });
    assert_eq!(sink.dumps().len(), 200);
    assert_eq!(gw.log_text().matches("status=sent").count(), 200);
    assert!(gw.queue_files().is_empty());
}

/// SIGTERM drains (RFC 5321 §3.8): the listening socket closes, an idle client is told
/// 421 at once, a message being sent is taken (250) before its client is told 421, and
/// one still unfinished at the deadline is refused with 421 and not kept; then the
/// gateway exits and the message taken is delivered.
#[test]
fn sigterm_lets_a_message_in_progress_finish_and_tells_the_others_421() {
    let dir = TempDir::new("drain");
    let sink = Sink::start();
    let mut gw = Gateway::start(dir.path(), &relay_to(sink.addr.port()));
    let addr = gw.inbound_addr();
    let mut idle = Raw::connect(addr);
    idle.replies(1);
    idle.send(b"EHLO idle.example\r\n");
    idle.replies(1);
    let mut finishing = Raw::connect(addr);
    begin_message(&mut finishing, "finished");
    let mut stuck = Raw::connect(addr);
    begin_message(&mut stuck, "never finished");

    gw.signal(libc::SIGTERM);
    let told = idle.until_close();
    assert!(
        told.starts_with("421 4.3.2 ") && told.contains("Service shutting down"),
        "{told}"
    );
    gw.wait_for_log("stopping: 3 session(s) and 0 delivery(ies) in progress have 8s to finish");
    wait_until("the listening socket to close", || {
        std::net::TcpStream::connect(addr).is_err()
    });

    finishing.send(b", the rest.\r\n.\r\n");
    let end = finishing.until_close();
    assert!(
        end.starts_with("250 2.0.0 Ok: queued as ") && end.contains("\r\n421 4.3.2 "),
        "{end}"
    );
    // The stuck one hears 421 at the deadline, its message not kept.
    let cut = stuck.until_close();
    assert!(cut.starts_with("421 4.3.2 "), "{cut}");
    assert!(gw.wait_exit().success());
    let log = gw.log_text();
    assert!(
        log.contains("stopping: every session and delivery ended"),
        "{log}"
    );

    gw.restart();
    let got = sink.wait_for(1);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(sink.count(), 1, "only the finished message was taken");
    assert!(String::from_utf8_lossy(&got[0].content).contains("Subject: finished"));
}

/// A parent that blocks signals (PID 1 blocks those it waits for) hands its mask down
/// through exec: the gateway unblocks the signals it handles, or SIGHUP would never
/// reload it and SIGTERM never stop it.
#[test]
fn a_gateway_started_with_its_signals_blocked_still_reloads_and_stops() {
    let dir = TempDir::new("blocked-signals");
    let mut gw = Gateway::start_with_blocked_signals(dir.path(), "");
    gw.signal(libc::SIGHUP);
    gw.wait_for_log("SIGHUP: reloading");
    gw.signal(libc::SIGTERM);
    assert!(gw.wait_exit().success());
    gw.wait_for_log("stopping: SIGTERM received");
}

/// From the greeting to half a message's content, on a new connection.
fn begin_message(raw: &mut Raw, subject: &str) {
    raw.replies(1);
    raw.send(b"EHLO client.example\r\n");
    raw.replies(1);
    raw.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n");
    let reply = raw.replies(3);
    assert!(reply.contains("354 "), "{reply}");
    raw.send(format!("Subject: {subject}\r\n\r\nhalf of it").as_bytes());
}

/// The stopping grace is `system stop-grace`, taken from the running configuration when
/// the stop begins: committed at the console, it holds for the next stop at once.
#[test]
fn the_stopping_grace_is_configured_and_a_commit_changes_it_at_once() {
    let dir = TempDir::new("drain-grace");
    let sink = Sink::start();
    let mut gw = Gateway::start(dir.path(), &relay_to(sink.addr.port()));
    let out = gw.console_script("configure\nset system stop-grace 1s\ncommit\nexit\n");
    assert!(out.contains("commit 2: applied"), "{out}");
    let mut stuck = Raw::connect(gw.inbound_addr());
    begin_message(&mut stuck, "never finished");

    gw.signal(libc::SIGTERM);
    let cut = stuck.until_close();
    assert!(cut.starts_with("421 4.3.2 "), "{cut}");
    assert!(gw.wait_exit().success());
    let log = gw.log_text();
    assert!(
        log.contains("stopping: 1 session(s) and 0 delivery(ies) in progress have 1s to finish"),
        "{log}"
    );
    // Cut at the deadline: the message is refused, not kept.
    assert!(
        log.contains("NOQUEUE: reject: DATA from unknown[127.0.0.1]: 421 4.3.2"),
        "{log}"
    );
}

/// SIGTERM waits for a delivery under way: a next hop slow to answer the end of the
/// message still gets its 250 read, so the message is recorded as sent and not sent again
/// after the restart (cut, it would be: the next hop had taken it).
#[test]
fn sigterm_waits_for_a_delivery_under_way_so_it_is_not_sent_twice() {
    let dir = TempDir::new("drain-delivery");
    let behaviour = SinkBehaviour {
        delay: Duration::from_secs(3),
        ..SinkBehaviour::default()
    };
    let begun = behaviour.data_begun.clone();
    let sink = Sink::start_on(0, behaviour);
    let mut gw = Gateway::start(dir.path(), &relay_to(sink.addr.port()));
    let id = send_to(&gw, &["b@example.com"]);
    wait_until("the delivery to be under way", || {
        begun.load(std::sync::atomic::Ordering::SeqCst) == 1
    });
    gw.signal(libc::SIGTERM);
    assert!(gw.wait_exit().success());
    let log = gw.log_text();
    assert!(
        log.contains("stopping: 0 session(s) and 1 delivery(ies) in progress have 8s to finish"),
        "{log}"
    );
    let sent = format!("{}: to=<b@example.com>", id.trim());
    assert!(
        log.lines()
            .any(|l| l.contains(&sent) && l.contains("status=sent")),
        "{log}"
    );
    assert!(
        log.contains("stopping: every session and delivery ended"),
        "{log}"
    );

    gw.restart();
    gw.wait_for_log("message(s) recovered from the queue");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.count(), 1, "sent once");
    assert_eq!(begun.load(std::sync::atomic::Ordering::SeqCst), 1);
}
