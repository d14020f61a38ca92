//! `drawbridge queue …` against a running gateway's state directory, end to end.

mod common;

use std::io::Write as _;
use std::process::Command;

use common::*;

/// Runs `drawbridge queue ARGS --state-dir STATE`; returns (success, stdout, stderr).
fn queue(gw: &Gateway, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_drawbridge"))
        .arg("queue")
        .args(args)
        .arg("--state-dir")
        .arg(&gw.state)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A gateway relaying example.com to `port` on loopback, where nothing listens until a
/// test says so: mail waits, and is tried again only when flushed or released.
fn start_deferring(dir: &TempDir, port: u16, extra: &str) -> Gateway {
    Gateway::start(
        dir.path(),
        &format!(
            "set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
             set route example.com relay [127.0.0.1]:{port}\n\
             set route example.com avoid-time 0s\n\
             set queue retry \"1h\"\n{extra}"
        ),
    )
}

fn send(gw: &Gateway, subject: &str) -> String {
    send_to(gw, "bob@example.com", subject)
}

#[test]
fn list_show_hold_release_delete_and_flush() {
    let dir = TempDir::new("queue-ops");
    let port = free_port();
    let mut gw = start_deferring(&dir, port, "");
    let kept = send(&gw, "kept");
    let held = send(&gw, "held");
    let gone = send(&gw, "gone");
    wait_until("three deferrals", || {
        gw.log_text().matches("status=deferred").count() >= 3
    });

    let (ok, text, _) = queue(&gw, &["list"]);
    assert!(ok);
    for id in [&kept, &held, &gone] {
        assert!(text.contains(id.as_str()), "{text}");
    }
    assert!(text.contains("(deferred: 451 4.4.1 connect to"), "{text}");
    assert!(text.ends_with("in 3 Requests.\n"), "{text}");

    let (ok, json, _) = queue(&gw, &["list", "--json"]);
    assert!(ok);
    let parsed = python(&format!(
        "import json,sys\nq=json.loads(sys.argv[1]) if False else json.loads('''{json}''')\nprint(len(q), sorted(m['recipients'][0]['status'] for m in q), q[0]['sender'])"
    ));
    assert_eq!(
        parsed.trim(),
        "3 ['deferred', 'deferred', 'deferred'] alice@example.org"
    );

    let (ok, shown, _) = queue(&gw, &["show", &kept]);
    assert!(
        ok && shown.contains("body of kept") && shown.contains("Received: from client.example.org"),
        "{shown}"
    );

    assert!(queue(&gw, &["hold", &held]).0);
    assert!(queue(&gw, &["delete", &gone]).0);
    let (ok, _, err) = queue(&gw, &["delete", &gone]);
    assert!(!ok && err.contains("no such message"), "{err}");
    let (ok, _, err) = queue(&gw, &["hold", "../../etc/passwd"]);
    assert!(!ok && err.contains("not a queue id"), "{err}");

    // The hold survives a restart.
    gw.restart();
    let (_, json, _) = queue(&gw, &["list", "--json"]);
    assert!(json.contains(&format!("\"id\":\"{held}\"")), "{json}");
    assert!(json.contains("\"held\":true"), "{json}");
    assert!(!json.contains(&gone), "{json}");

    // With the next hop up, flush delivers what is not held; the held one waits.
    let sink = Sink::start_on(port, SinkBehaviour::default());
    let (ok, flushed, _) = queue(&gw, &["flush"]);
    assert!(ok, "{flushed}");
    let msgs = sink.wait_for(1);
    assert!(String::from_utf8_lossy(&msgs[0].content).contains("body of kept"));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(sink.count(), 1);

    assert!(queue(&gw, &["release", &held]).0);
    let msgs = sink.wait_for(2);
    assert!(String::from_utf8_lossy(&msgs[1].content).contains("body of held"));
    wait_until("an empty queue", || {
        queue(&gw, &["list"]).1 == "Mail queue is empty\n"
    });
}

#[test]
fn queue_commands_say_clearly_when_no_gateway_runs() {
    let dir = TempDir::new("queue-none");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_drawbridge"))
            .args(args)
            .arg("--state-dir")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    // Reading works on a stopped gateway's state directory; changing needs the gateway.
    let out = run(&["queue", "list"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Mail queue is empty\n"
    );
    let out = run(&["queue", "flush"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no gateway answers on") && err.contains("this needs the running gateway"),
        "{err}"
    );
}

/// Sends one message to `rcpt`; returns its queue id.
fn send_to(gw: &Gateway, rcpt: &str, subject: &str) -> String {
    let out = python(&format!(
        r#"
import smtplib
with smtplib.SMTP("127.0.0.1", {port}, timeout=30) as s:
    s.ehlo("client.example.org")
    s.mail("alice@example.org")
    s.rcpt("{rcpt}")
    code, resp = s.data(b"Subject: {subject}\r\n\r\nbody of {subject}\r\n")
    print(resp.decode())
"#,
        port = gw.inbound
    ));
    out.trim().rsplit(' ').next().unwrap().to_string()
}

#[test]
fn bulk_commands_flush_by_domain_summary_and_a_stopped_gateway() {
    let dir = TempDir::new("queue-bulk");
    let com = free_port();
    let net = free_port();
    let mut gw = Gateway::start(
        dir.path(),
        &format!(
            "set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
             set route example.com relay [127.0.0.1]:{com}\n\
             set route example.net relay [127.0.0.1]:{net}\n\
             set route example.com avoid-time 0s\n\
             set route example.net avoid-time 0s\n\
             set queue retry \"1h\"\n"
        ),
    );
    let a = send_to(&gw, "a@example.com", "one");
    let b = send_to(&gw, "b@example.com", "two");
    let c = send_to(&gw, "c@example.net", "three");
    wait_until("three deferrals", || {
        gw.log_text().matches("status=deferred").count() >= 3
    });

    // qshape: open recipients by domain, all younger than five minutes.
    let (ok, shape, _) = queue(&gw, &["summary"]);
    assert!(ok, "{shape}");
    let row = |text: &str, name: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row in:\n{text}"))
            .split_whitespace()
            .skip(1)
            .take(2)
            .map(str::to_string)
            .collect()
    };
    assert_eq!(row(&shape, "TOTAL"), ["3", "3"], "{shape}");
    assert_eq!(row(&shape, "example.com"), ["2", "2"], "{shape}");
    assert_eq!(row(&shape, "example.net"), ["1", "1"], "{shape}");

    // Every message at once, as postsuper's ALL.
    let (ok, held, _) = queue(&gw, &["hold", "all"]);
    assert!(ok, "{held}");
    for id in [&a, &b, &c] {
        assert!(held.contains(&format!("{id}: held")), "{held}");
    }
    let (_, json, _) = queue(&gw, &["list", "--json"]);
    assert_eq!(json.matches("\"held\":true").count(), 3, "{json}");
    assert!(queue(&gw, &["release", "all"]).0);
    let (_, json, _) = queue(&gw, &["list", "--json"]);
    assert_eq!(json.matches("\"held\":false").count(), 3, "{json}");

    // Flushing one domain tries only its mail.
    let net_sink = Sink::start_on(net, SinkBehaviour::default());
    let com_sink = Sink::start_on(com, SinkBehaviour::default());
    let (ok, flushed, _) = queue(&gw, &["flush", "EXAMPLE.net"]);
    assert!(
        ok && flushed.starts_with("1 message(s) flushed"),
        "{flushed}"
    );
    let got = net_sink.wait_for(1);
    assert!(String::from_utf8_lossy(&got[0].content).contains("body of three"));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(com_sink.count(), 0);
    drop(com_sink);

    // A stopped gateway's queue is read as it lies, under the state lock.
    gw.signal(libc::SIGTERM);
    assert!(gw.wait_exit().success());
    let (ok, listed, err) = queue(&gw, &["list"]);
    assert!(ok, "{err}");
    assert!(
        listed.contains(&a) && listed.contains(&b) && !listed.contains(&c),
        "{listed}"
    );
    let (ok, shown, _) = queue(&gw, &["show", &b]);
    assert!(ok && shown.contains("body of two"), "{shown}");
    let (ok, shape, _) = queue(&gw, &["summary"]);
    assert!(ok);
    assert_eq!(row(&shape, "example.com"), ["2", "2"], "{shape}");
    let (ok, _, err) = queue(&gw, &["delete", "all"]);
    assert!(
        !ok && err.contains("this needs the running gateway"),
        "{err}"
    );

    // Running again: requeue tries at once, delete all empties the queue.
    gw.restart();
    let com_sink = Sink::start_on(com, SinkBehaviour::default());
    let (ok, requeued, _) = queue(&gw, &["requeue", &a]);
    assert!(
        ok && requeued.contains(&format!("{a}: requeued")),
        "{requeued}"
    );
    com_sink.wait_for(1);
    let (ok, deleted, _) = queue(&gw, &["delete", "all"]);
    assert!(
        ok && deleted.contains(&format!("{b}: deleted")),
        "{deleted}"
    );
    assert_eq!(queue(&gw, &["list"]).1, "Mail queue is empty\n");
}

/// Past `queue active-limit`, messages wait in their files with only their schedule in
/// memory: all are listed, shown, held (the hold written to the file survives a
/// restart), flushed and delivered, and none is lost.
#[test]
fn past_the_active_limit_messages_wait_in_their_files_and_none_is_lost() {
    let dir = TempDir::new("queue-active-limit");
    let port = free_port();
    let mut gw = start_deferring(&dir, port, "set queue active-limit 2\n");
    let ids: Vec<String> = (0..8).map(|i| send(&gw, &format!("number {i}"))).collect();
    wait_until("eight deferrals", || {
        gw.log_text().matches("status=deferred").count() >= 8
    });

    let (ok, text, _) = queue(&gw, &["list"]);
    assert!(ok);
    for id in &ids {
        assert!(text.contains(id.as_str()), "{id} in {text}");
    }
    assert_eq!(
        text.matches("(deferred: 451 4.4.1 connect to").count(),
        8,
        "{text}"
    );
    assert!(text.ends_with("in 8 Requests.\n"), "{text}");
    let status = gw.console_script("show status\n");
    assert!(
        status.contains("Queue:          8 message(s), 0 held; 2 whole in memory (active-limit 2)"),
        "{status}"
    );
    // The first one was tried first and is parked by now: it is read from its files.
    let (ok, shown, _) = queue(&gw, &["show", &ids[0]]);
    assert!(ok && shown.contains("body of number 0"), "{shown}");
    assert!(queue(&gw, &["hold", &ids[0]]).0);
    let (_, json, _) = queue(&gw, &["list", "--json"]);
    assert_eq!(json.matches("\"held\":true").count(), 1, "{json}");

    gw.restart();
    let (_, json, _) = queue(&gw, &["list", "--json"]);
    assert_eq!(json.matches("\"id\":").count(), 8, "{json}");
    assert!(
        json.contains(&format!("\"id\":\"{}\",", ids[0]))
            && json.matches("\"held\":true").count() == 1,
        "{json}"
    );

    // With the next hop up, a flush delivers the seven, two at a time in memory; the
    // held one waits for its release.
    let sink = Sink::start_on(port, SinkBehaviour::default());
    assert!(queue(&gw, &["flush"]).0);
    sink.wait_for(7);
    assert!(queue(&gw, &["release", &ids[0]]).0);
    let msgs = sink.wait_for(8);
    let mut bodies: Vec<String> = msgs
        .iter()
        .map(|m| {
            let text = String::from_utf8_lossy(&m.content).into_owned();
            let at = text.find("body of number ").unwrap();
            text[at..].lines().next().unwrap().to_string()
        })
        .collect();
    bodies.sort();
    let expected: Vec<String> = (0..8).map(|i| format!("body of number {i}")).collect();
    assert_eq!(bodies, expected);
    wait_until("an empty queue", || {
        queue(&gw, &["list"]).1 == "Mail queue is empty\n"
    });
}

#[test]
fn a_stop_finishes_the_queue_file_writes_it_was_given() {
    const N: usize = 400;
    let dir = TempDir::new("queue-stop-writes");
    let port = free_port();
    let mut gw = start_deferring(&dir, port, "set queue active-limit 1\n");
    python(&format!(
        r#"
import smtplib
with smtplib.SMTP("127.0.0.1", {port}, timeout=30) as s:
    s.ehlo("client.example.org")
    for i in range({N}):
        s.sendmail("alice@example.org", ["bob@example.com"], b"Subject: %d\r\n\r\nbody\r\n" % i)
"#,
        port = gw.inbound
    ));
    wait_until("every message deferred", || {
        gw.log_text().matches("status=deferred").count() >= N
    });
    // A hold of a message waiting in its files is a read and a write of its envelope
    // file, done in order after the answer: the stop that follows at once waits for them.
    let (ok, out, _) = queue(&gw, &["hold", "ALL"]);
    assert!(ok && out.lines().count() == N, "{out}");
    gw.signal(libc::SIGTERM);
    assert!(gw.wait_exit().success());
    assert!(!gw.log_text().contains("not done at the deadline"));
    gw.restart();
    let (_, json, _) = queue(&gw, &["list", "--json"]);
    assert_eq!(json.matches("\"held\":true").count(), N);
}

#[test]
fn showing_a_queued_message_reads_its_files_away_from_the_event_loop() {
    let dir = TempDir::new("queue-show-hung");
    let port = free_port();
    let mut gw = start_deferring(&dir, port, "");
    let id = send(&gw, "hung disk");
    // Deferred, it is written to its own files; started again, the gateway reads its
    // content from them.
    let files = gw.state.join("spool/queue");
    let content = files.join(format!("{id}.msg"));
    wait_until("its files", || files.join(format!("{id}.env")).exists());
    gw.restart();
    // Its content file becomes a FIFO nobody writes to yet: reading it blocks, as a hung
    // disk would.
    std::fs::remove_file(&content).unwrap();
    let made = Command::new("mkfifo").arg(&content).status().unwrap();
    assert!(made.success());
    std::thread::scope(|s| {
        let shown = s.spawn(|| queue(&gw, &["show", &id]));
        std::thread::sleep(std::time::Duration::from_millis(500));
        // Meanwhile the gateway still answers SMTP.
        let (served, out) = python_result(&format!(
            "import smtplib\n\
             s = smtplib.SMTP('127.0.0.1', {}, timeout=5)\n\
             print(s.noop()[0])\n\
             s.quit()",
            gw.inbound
        ));
        // A writer that never blocks, whether or not the gateway opened the file.
        let mut fifo = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&content)
            .unwrap();
        fifo.write_all(b"Subject: hung disk\r\n\r\nat last\r\n")
            .unwrap();
        drop(fifo);
        assert!(served && out.trim() == "250", "{out}");
        let (ok, text, err) = shown.join().unwrap();
        assert!(ok && text.contains("at last"), "{text}{err}");
    });
}
