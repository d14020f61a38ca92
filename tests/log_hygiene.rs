//! Peer-supplied text in the log: a client and a next hop feed ESC, CR, NUL and 8-bit
//! octets through every field that reaches a log line (command verbs, HELO names,
//! addresses, SASL user names, the next hop's reply texts), and the log comes out as
//! valid UTF-8 without a single control, escape or reordering character of theirs.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use common::*;

/// The reply a hostile next hop gives every RCPT: an escape sequence, a NUL, a bare CR,
/// invalid UTF-8, a C1 control and a right-to-left override.
const NASTY_REPLY: &[u8] =
    b"550 5.1.1 \x1b[31mred\x00nul\rcr \xff\xfe bad \xc2\x9bcsi \xe2\x80\xaeevil\r\n";

/// A next hop that refuses every recipient with [`NASTY_REPLY`].
fn hostile_next_hop() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut out = conn.try_clone().unwrap();
                let mut input = BufReader::new(conn);
                let _ = out.write_all(b"220 hostile\x1b[5m ESMTP\r\n");
                let mut line = Vec::new();
                loop {
                    line.clear();
                    if input.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let upper = String::from_utf8_lossy(&line).to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") {
                        b"250-hostile\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
                    } else if upper.starts_with("RCPT") {
                        NASTY_REPLY
                    } else if upper.starts_with("QUIT") {
                        let _ = out.write_all(b"221 bye\r\n");
                        return;
                    } else {
                        b"250 ok\r\n"
                    };
                    if out.write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                A[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

#[test]
fn hostile_text_reaches_the_log_escaped() {
    let dir = TempDir::new("log-hygiene");
    let hop = hostile_next_hop();
    let gw = Gateway::start(
        dir.path(),
        &format!(
            "set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
             set ruleset INTERNAL mechanisms \"PLAIN\"\n\
             set service inbound auth yes\n\
             set route example.com relay [127.0.0.1]:{hop}\n"
        ),
    );
    let mut raw = Raw::connect(gw.inbound_addr());
    assert!(raw.replies(1).starts_with("220"));
    // A verb of escapes, a HELO name of them, then a real one.
    raw.send(b"\x1b[2J\xc2\x9bX\r\n");
    raw.send(b"NO\x00OP\r\n");
    raw.send(b"EHLO evil\x1b]0;title\x07\xff.example\r\n");
    raw.send(b"EHLO client.example\r\n");
    let replies = raw.replies(4);
    assert!(replies.contains("250-"), "{replies}");
    // A SASL user name with ESC, CR and a C1 control in it.
    let mut plain = b"\0evil\x1b[31m\rname\xc2\x9b\0wrong".to_vec();
    raw.send(format!("AUTH PLAIN {}\r\n", b64(&plain)).as_bytes());
    assert!(raw.replies(1).starts_with("535"));
    plain.clear();
    // A UTF-8 sender with a right-to-left override and a C1 control; a recipient the
    // hostile next hop refuses.
    raw.send("MAIL FROM:<x\u{202e}y\u{9b}z@example.org> SMTPUTF8\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n".as_bytes());
    let replies = raw.replies(3);
    let sender_taken = replies.starts_with("250");
    if !sender_taken {
        raw.send(b"RSET\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n");
        assert!(raw.replies(4).contains("354"));
    }
    raw.send(b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    assert!(raw.replies(2).contains("250 2.0.0 Ok: queued as"));
    gw.wait_for_log("status=bounced");

    let log = std::fs::read(&gw.log).unwrap();
    let text = String::from_utf8(log).expect("the log is valid UTF-8");
    for (i, line) in text.lines().enumerate() {
        let bad = line.chars().find(|&c| {
            (c.is_control() && c != '\t')
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{fffd}')
        });
        assert!(bad.is_none(), "line {i} holds {bad:?}: {line:?}");
    }
    // Each field is there, escaped.
    // An unknown verb is not even quoted; a known one is.
    assert!(text.contains("NOQUEUE: reject: UNKNOWN from"), "{text}");
    assert!(
        text.contains("authentication failed for evil\\x1b[31m\\x0dname\\x9b"),
        "{text}"
    );
    assert!(
        text.contains("(550 5.1.1 \\x1b[31mred\\x00nul\\x0dcr"),
        "{text}"
    );
    assert!(
        text.contains("\\u{fffd}\\u{fffd} bad \\x9bcsi \\u{202e}evil)"),
        "{text}"
    );
    if sender_taken {
        assert!(
            text.contains("from=<x\\u{202e}y\\x9bz@example.org>"),
            "{text}"
        );
    }
}
