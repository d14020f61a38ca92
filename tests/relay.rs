//! The inbound relay end to end over loopback: real clients in, real next hops out.

mod common;

use common::*;

/// Routes example.com and its subdomains to `port`, with quick retries for tests.
fn routes(port: u16) -> String {
    format!(
        "set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
         set route example.com relay [127.0.0.1]:{port}\n\
         set route .example.com relay [127.0.0.1]:{port}\n\
         set route example.com avoid-time 1s\n\
         set route .example.com avoid-time 1s\n\
         set queue retry \"1s\"\n"
    )
}

const SEND_8BIT: &str = r#"
import smtplib
msg = ("From: Alice <alice@example.org>\r\n"
       "To: Bob <bob@example.com>\r\n"
       "Subject: relay test\r\n"
       "MIME-Version: 1.0\r\n"
       "Content-Type: text/plain; charset=utf-8\r\n"
       "Content-Transfer-Encoding: 8bit\r\n"
       "\r\n"
       "Grüße aus Köln\r\n"
       ".leading dot\r\n"
       ".\r\n"
       "..two dots\r\n"
       "last line\r\n").encode("utf-8")
with smtplib.SMTP("127.0.0.1", PORT, timeout=30) as s:
    s.ehlo("client.example.org")
    code, resp = s.docmd("MAIL FROM:<alice@example.org> BODY=8BITMIME")
    assert code == 250, (code, resp)
    code, resp = s.docmd("RCPT TO:<bob@example.com>")
    assert code == 250, (code, resp)
    code, resp = s.data(msg)
    assert code == 250, (code, resp)
    print(resp.decode())
"#;

const BODY: &[u8] = "Grüße aus Köln\r\n.leading dot\r\n.\r\n..two dots\r\nlast line\r\n".as_bytes();

#[test]
fn smtplib_through_inbound_to_the_test_sink() {
    let dir = TempDir::new("sink");
    let sink = Sink::start();
    let gw = Gateway::start(dir.path(), &routes(sink.addr.port()));
    let out = python(&SEND_8BIT.replace("PORT", &gw.inbound.to_string()));
    assert!(out.contains("2.0.0 Ok: queued as "), "{out}");
    let id = out.trim().rsplit(' ').next().unwrap().to_string();

    let msgs = sink.wait_for(1);
    let m = &msgs[0];
    assert_eq!(m.helo, "gw.example.com");
    assert!(m.mail.starts_with("<alice@example.org>"), "{}", m.mail);
    assert!(
        m.mail.contains("BODY=8BITMIME"),
        "8-bit body must be declared: {}",
        m.mail
    );
    assert_eq!(m.rcpts, ["<bob@example.com>"]);

    let content = String::from_utf8(m.content.clone()).unwrap();
    // Our trace header comes first, naming the client, us, the protocol and the id.
    assert!(content.starts_with("Received: from client.example.org (unknown [127.0.0.1])\r\n\tby gw.example.com (drawbridge) with ESMTP id "), "{content}");
    assert!(
        content.contains(&format!("id {id}\r\n\tfor <bob@example.com>;")),
        "{content}"
    );
    // The original header and body arrive byte for byte, 8-bit intact.
    let original = content
        .split_once("Subject: relay test\r\n")
        .map(|x| x.1)
        .unwrap();
    assert!(content.contains("From: Alice <alice@example.org>\r\nTo: Bob <bob@example.com>\r\n"));
    assert!(
        original.ends_with(std::str::from_utf8(BODY).unwrap()),
        "{original}"
    );
    // Dot-stuffing is applied on the wire: every content line starting with '.' doubled.
    let wire = String::from_utf8(m.wire.clone()).unwrap();
    assert!(
        wire.contains("\r\n..leading dot\r\n..\r\n...two dots\r\n"),
        "{wire}"
    );
    assert!(wire.ends_with("last line\r\n.\r\n"));

    gw.wait_for_log(&format!(
        "{id}: to=<bob@example.com>, relay=127.0.0.1[127.0.0.1]:{}",
        sink.addr.port()
    ));
    gw.wait_for_log(&format!("{id}: removed"));
    let log = gw.log_text();
    assert!(
        log.contains(&format!("{id}: from=<alice@example.org>, size=")),
        "{log}"
    );
    assert!(
        log.contains("dsn=2.0.0, status=sent (250 2.0.0 Ok: queued)"),
        "{log}"
    );
    wait_until("the queue to empty", || {
        !gw.queue_files().iter().any(|f| f.starts_with(&id))
    });
}

#[test]
fn smtplib_through_inbound_to_postfix_smtp_sink() {
    let dir = TempDir::new("pfsink");
    let sink = PostfixSink::start(dir.path());
    let gw = Gateway::start(dir.path(), &routes(sink.port));
    let out = python(&SEND_8BIT.replace("PORT", &gw.inbound.to_string()));
    assert!(out.contains("queued as"), "{out}");
    wait_until("smtp-sink to dump the message", || {
        sink.dumps().iter().any(|d| d.contains("last line"))
    });
    let dump = sink
        .dumps()
        .into_iter()
        .find(|d| d.contains("last line"))
        .unwrap();
    assert!(dump.contains("X-Mail-Args: <alice@example.org>"), "{dump}");
    assert!(dump.contains("BODY=8BITMIME"), "{dump}");
    assert!(dump.contains("X-Rcpt-Args: <bob@example.com>"), "{dump}");
    assert!(
        dump.contains("by gw.example.com (drawbridge) with ESMTP id"),
        "{dump}"
    );
    assert!(dump.contains("Subject: relay test"), "{dump}");
    // smtp-sink undoes the dot-stuffing we applied: the body is as the client wrote it.
    let body = dump.replace("\r\n", "\n");
    assert!(
        body.contains("Grüße aus Köln\n.leading dot\n.\n..two dots\nlast line\n"),
        "{dump}"
    );
}

#[test]
fn a_message_acknowledged_then_sigkilled_is_delivered_after_restart() {
    let dir = TempDir::new("sigkill");
    let sink_port = free_port();
    let mut gw = Gateway::start(dir.path(), &routes(sink_port));
    // The next hop is down, so the message is certainly still queued when we kill.
    let out = python(&SEND_8BIT.replace("PORT", &gw.inbound.to_string()));
    gw.kill();
    assert!(out.contains("queued as"), "{out}");
    let id = out.trim().rsplit(' ').next().unwrap().to_string();
    let files = gw.queue_files();
    assert!(
        files.contains(&format!("{id}.msg")) && files.contains(&format!("{id}.env")),
        "{files:?}"
    );

    let sink = Sink::start_on(sink_port, SinkBehaviour::default());
    gw.restart();
    gw.wait_for_log("1 message(s) recovered");
    let msgs = sink.wait_for(1);
    assert!(String::from_utf8_lossy(&msgs[0].content).contains(&format!("id {id}")));
    gw.wait_for_log(&format!("{id}: removed"));
}

#[test]
fn half_written_queue_files_are_discarded_at_start() {
    let dir = TempDir::new("torn");
    let sink = Sink::start();
    let mut gw = Gateway::start(dir.path(), &routes(sink.addr.port()));
    gw.kill();
    let queue = gw.state.join("spool").join("queue");
    std::fs::write(
        queue.join("0000000000AAAA.msg"),
        b"Subject: never acknowledged\r\n",
    )
    .unwrap();
    std::fs::write(queue.join("0000000000BBBB.env"), b"DBENV\x00\x01garbage").unwrap();
    gw.restart();
    gw.wait_for_log_count("0 message(s) recovered", 2);
    gw.wait_for_log("0000000000AAAA: discarding half-written message");
    gw.wait_for_log("0000000000BBBB: discarding half-written message");
    assert!(gw.queue_files().is_empty(), "{:?}", gw.queue_files());
    assert_eq!(sink.count(), 0);
}

#[test]
fn a_message_waits_while_the_next_hop_is_down_and_goes_when_it_returns() {
    let dir = TempDir::new("down");
    let sink_port = free_port();
    let gw = Gateway::start(dir.path(), &routes(sink_port));
    let out = python(&SEND_8BIT.replace("PORT", &gw.inbound.to_string()));
    let id = out.trim().rsplit(' ').next().unwrap().to_string();
    gw.wait_for_log(&format!("{id}: to=<bob@example.com>, relay=none"));
    gw.wait_for_log("status=deferred (451 4.4.1 connect to 127.0.0.1[127.0.0.1]");
    // A message that has to wait leaves the journal for its own files.
    wait_until("the deferred message to move to its files", || {
        let files = gw.queue_files();
        files.contains(&format!("{id}.env")) && files.contains(&format!("{id}.msg"))
    });

    let sink = Sink::start_on(sink_port, SinkBehaviour::default());
    let msgs = sink.wait_for(1);
    assert!(String::from_utf8_lossy(&msgs[0].content).contains(&format!("id {id}")));
    gw.wait_for_log(&format!("{id}: removed"));
}

#[test]
fn with_the_first_relay_dead_delivery_goes_through_the_second() {
    let dir = TempDir::new("failover");
    let dead = free_port();
    let sink = Sink::start();
    let extra = format!(
        "set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
         set route example.com relay [127.0.0.1]:{dead},[127.0.0.1]:{}\n",
        sink.addr.port()
    );
    let gw = Gateway::start(dir.path(), &extra);
    for _ in 0..2 {
        python(&SEND_8BIT.replace("PORT", &gw.inbound.to_string()));
    }
    let msgs = sink.wait_for(2);
    assert_eq!(msgs.len(), 2);
    gw.wait_for_log(&format!("connect to 127.0.0.1[127.0.0.1]:{dead}"));
    assert!(
        !gw.log_text().contains("status=deferred"),
        "{}",
        gw.log_text()
    );
}

#[test]
fn per_recipient_status_is_kept_and_permanent_failures_are_recorded() {
    let dir = TempDir::new("rcpt");
    let sink = Sink::start_on(
        0,
        SinkBehaviour {
            reject: vec!["gone@example.com".into()],
            defer: vec!["later@example.com".into()],
            ..Default::default()
        },
    );
    let gw = Gateway::start(dir.path(), &routes(sink.addr.port()));
    let script = format!(
        r#"
import smtplib
with smtplib.SMTP("127.0.0.1", {port}, timeout=30) as s:
    r = s.sendmail("alice@example.org", ["bob@example.com", "gone@example.com", "later@example.com"],
                   b"Subject: three\r\n\r\nhello\r\n")
    assert r == {{}}, r
"#,
        port = gw.inbound
    );
    python(&script);
    let msgs = sink.wait_for(1);
    assert_eq!(msgs[0].rcpts, ["<bob@example.com>"]);
    gw.wait_for_log("to=<gone@example.com>");
    gw.wait_for_log("to=<later@example.com>");
    let log = gw.log_text();
    assert!(
        log.contains("to=<bob@example.com>") && log.contains("status=sent"),
        "{log}"
    );
    assert!(
        log.contains("dsn=5.1.1, status=bounced (550 5.1.1 User unknown)"),
        "{log}"
    );
    assert!(
        log.contains("dsn=4.2.0, status=deferred (450 4.2.0 Try again later)"),
        "{log}"
    );
    // The deferred recipient is retried alone; bob is not sent twice.
    wait_until("a second attempt for the deferred recipient", || {
        gw.log_text().matches("to=<later@example.com>").count() >= 2
    });
    assert_eq!(sink.count(), 1);
    assert_eq!(gw.log_text().matches("to=<bob@example.com>").count(), 1);
}

/// A next hop that takes the TCP connection and never says a word.
fn black_hole(port: u16) -> std::thread::JoinHandle<()> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(3) {
            if let Ok((s, _)) = listener.accept() {
                held.push(s);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    })
}

#[test]
fn a_journal_message_in_flight_when_sigkilled_is_delivered_after_restart() {
    let dir = TempDir::new("sigkill-journal");
    let sink_port = free_port();
    let hole = black_hole(sink_port);
    let mut gw = Gateway::start(dir.path(), &routes(sink_port));
    let out = python(&SEND_8BIT.replace("PORT", &gw.inbound.to_string()));
    // Answered 250; the delivery hangs on the silent next hop; the message exists only
    // in the journal.
    gw.kill();
    assert!(out.contains("queued as"), "{out}");
    let id = out.trim().rsplit(' ').next().unwrap().to_string();
    assert!(
        !gw.queue_files().iter().any(|f| f.starts_with(&id)),
        "{:?}",
        gw.queue_files()
    );
    hole.join().unwrap();

    let sink = Sink::start_on(sink_port, SinkBehaviour::default());
    gw.restart();
    gw.wait_for_log("1 message(s) recovered");
    let msgs = sink.wait_for(1);
    assert!(String::from_utf8_lossy(&msgs[0].content).contains(&format!("id {id}")));
    gw.wait_for_log(&format!("{id}: removed"));
    // Delivered and done: a third start finds nothing to send again.
    gw.restart();
    gw.wait_for_log("0 message(s) recovered");
    assert_eq!(sink.count(), 1);
}

#[test]
fn a_message_too_big_for_the_journal_streams_through_its_own_files() {
    let dir = TempDir::new("big");
    let sink = Sink::start();
    let gw = Gateway::start(dir.path(), &routes(sink.addr.port()));
    let script = format!(
        r#"
import smtplib
line = b"0123456789" * 9 + b"\r\n"
body = b"Subject: big\r\n\r\n" + line * 6000
with smtplib.SMTP("127.0.0.1", {port}, timeout=30) as s:
    s.sendmail("alice@example.org", ["bob@example.com"], body)
print(len(body))
"#,
        port = gw.inbound
    );
    let len: usize = python(&script).trim().parse().unwrap();
    assert!(len > 256 * 1024);
    let msgs = sink.wait_for(1);
    let content = String::from_utf8(msgs[0].content.clone()).unwrap();
    let original = content.split_once("Subject: big\r\n").unwrap().1;
    assert_eq!(original.len() + "Subject: big\r\n".len(), len);
    assert_eq!(
        original
            .matches(&format!("{}\r\n", "0123456789".repeat(9)))
            .count(),
        6000
    );
}
