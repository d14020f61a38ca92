//! Remote syslog: every log line goes to the configured receivers as an RFC 5424 message
//! over UDP, with the Postfix-shaped text as MSG. A UDP listener here parses each frame
//! strictly; a commit moves the lines to another receiver at once.

mod common;

use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// One RFC 5424 message, parsed (§6: HEADER SP STRUCTURED-DATA [SP MSG]).
#[derive(Debug)]
struct Frame {
    pri: u8,
    timestamp: String,
    host: String,
    app: String,
    procid: String,
    msg: String,
}

fn parse(datagram: &[u8]) -> Frame {
    let text = std::str::from_utf8(datagram).expect("UTF-8");
    let rest = text.strip_prefix('<').expect("PRI opens with <");
    let (pri, rest) = rest.split_once('>').expect("PRI closes with >");
    assert!(
        (1..=3).contains(&pri.len()) && pri.bytes().all(|b| b.is_ascii_digit()),
        "{text}"
    );
    let pri: u8 = pri.parse().unwrap();
    assert!(pri < 192, "{text}");
    let mut fields = rest.splitn(7, ' ');
    let mut next = || {
        fields
            .next()
            .unwrap_or_else(|| panic!("short frame: {text}"))
            .to_string()
    };
    assert_eq!(next(), "1", "VERSION: {text}");
    let timestamp = next();
    let host = next();
    let app = next();
    let procid = next();
    assert_eq!(next(), "-", "MSGID: {text}");
    let sd_and_msg = next();
    let msg = sd_and_msg
        .strip_prefix("- ")
        .unwrap_or_else(|| panic!("SD: {text}"))
        .to_string();
    // TIMESTAMP: full-date "T" full-time with a fraction, in UTC (§6.2.3).
    let t = timestamp.as_bytes();
    assert_eq!(t.len(), 27, "{timestamp}");
    for (i, b) in t.iter().enumerate() {
        let expected = match i {
            4 | 7 => *b == b'-',
            10 => *b == b'T',
            13 | 16 => *b == b':',
            19 => *b == b'.',
            26 => *b == b'Z',
            _ => b.is_ascii_digit(),
        };
        assert!(expected, "TIMESTAMP {timestamp}");
    }
    for field in [&host, &app, &procid] {
        assert!(
            !field.is_empty() && field.bytes().all(|b| b.is_ascii_graphic()),
            "{text}"
        );
    }
    assert!(app.len() <= 48 && procid.len() <= 128);
    Frame {
        pri,
        timestamp,
        host,
        app,
        procid,
        msg,
    }
}

/// A UDP receiver collecting datagrams.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let port = socket.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            loop {
                if let Ok(n) = socket.recv(&mut buf) {
                    g.lock().unwrap().push(buf[..n].to_vec());
                }
                if Arc::strong_count(&g) == 1 {
                    return;
                }
            }
        });
        Receiver { port, got }
    }

    fn frames(&self) -> Vec<Frame> {
        self.got.lock().unwrap().iter().map(|d| parse(d)).collect()
    }

    fn wait_for(&self, needle: &str) -> Vec<Frame> {
        wait_until(&format!("a syslog message containing {needle:?}"), || {
            self.frames().iter().any(|f| f.msg.contains(needle))
        });
        self.frames()
    }
}

#[test]
fn log_lines_reach_syslog_as_rfc5424_and_follow_commits() {
    let dir = TempDir::new("syslog");
    let sink = Sink::start();
    let first = Receiver::start();
    let gw = Gateway::start(
        dir.path(),
        &format!(
            "set system syslog host 127.0.0.1:{}\nset route example.com relay [127.0.0.1]:{}\n",
            first.port,
            sink.addr.port()
        ),
    );
    python(&format!(
        r#"
import smtplib
s = smtplib.SMTP("127.0.0.1", {port}, timeout=30)
s.sendmail("alice@example.org", ["bob@example.com"], b"Subject: syslog\r\n\r\nhello\r\n")
s.quit()
"#,
        port = gw.inbound
    ));
    let frames = first.wait_for("status=sent");
    let pid = gw.pid().to_string();
    for f in &frames {
        assert_eq!(f.host, "gw.example.com");
        assert!(f.app.starts_with("drawbridge/"), "{f:?}");
        assert_eq!(f.procid, pid);
        // Facility mail (2); severity info (6), warning (4) or error (3).
        assert!([22, 20, 19].contains(&f.pri), "{f:?}");
        assert!(f.timestamp.starts_with("20"), "{f:?}");
    }
    // The Postfix-shaped lines, as the log file has them after the tag.
    let log = gw.log_text();
    let find = |needle: &str| {
        frames
            .iter()
            .find(|f| f.msg.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} in {frames:?}"))
    };
    let client = find("client=unknown[127.0.0.1]");
    assert_eq!(client.app, "drawbridge/smtpd");
    assert!(
        log.contains(&format!("drawbridge/smtpd[{pid}]: {}", client.msg)),
        "{log}"
    );
    let queued = find("from=<alice@example.org>, size=");
    assert_eq!(queued.app, "drawbridge/qmgr");
    let sent = find("to=<bob@example.com>, relay=127.0.0.1[127.0.0.1]:");
    assert_eq!(sent.app, "drawbridge/smtp");
    assert!(
        sent.msg
            .contains("dsn=2.0.0, status=sent (250 2.0.0 Ok: queued)"),
        "{sent:?}"
    );
    assert_eq!(sent.pri, 22);

    // A commit moves syslog to another receiver at once.
    first.wait_for("disconnect from unknown[127.0.0.1]");
    let second = Receiver::start();
    let edit = dir.path().join("syslog.conf");
    std::fs::write(
        &edit,
        format!(
            "delete system syslog host 127.0.0.1:{}\nset system syslog host 127.0.0.1:{}\n",
            first.port, second.port
        ),
    )
    .unwrap();
    let (ok, out, err) = gw.cli(&["config", "load", "merge", edit.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    second.wait_for("applied");
    python(&format!(
        r#"
import smtplib
s = smtplib.SMTP("127.0.0.1", {port}, timeout=30)
s.noop()
s.quit()
"#,
        port = gw.inbound
    ));
    second.wait_for("disconnect from unknown[127.0.0.1]");
    let disconnects = |r: &Receiver| {
        r.frames()
            .iter()
            .filter(|f| f.msg.contains("disconnect from"))
            .count()
    };
    assert_eq!(disconnects(&first), 1, "the old receiver still gets lines");
    assert_eq!(disconnects(&second), 1);
}
