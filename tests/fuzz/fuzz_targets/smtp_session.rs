//! Whole SMTP server sessions driven by generated operation sequences: the input is read
//! as operations (client bytes, canned commands, time passing, the layer's answers to
//! the session's events, TLS outcomes, stress, the gateway shutting down), and the session
//! must never panic, must reply only well-formed lines, and must keep its events in order
//! (a message begins and ends in pairs; nothing follows Closing; no transaction begins
//! once it is shutting down).
#![no_main]

use std::rc::Rc;
use std::time::{Duration, Instant};

use drawbridge::proto::config::{EhloKeywords, Service};
use drawbridge::proto::smtp::reply::Reply;
use drawbridge::proto::smtp::server::{Event, ServerConfig, Session, TlsInfo, Verdict};
use libfuzzer_sys::fuzz_target;

const PIECES: &[&[u8]] = &[
    b"EHLO c.example\r\n",
    b"HELO c.example\r\n",
    b"MAIL FROM:<a@example.org>\r\n",
    b"MAIL FROM:<> SIZE=100 BODY=8BITMIME\r\n",
    b"RCPT TO:<b@example.com>\r\n",
    b"RCPT TO:<c@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c@example.com\r\n",
    b"DATA\r\n",
    b"Subject: x\r\n\r\nbody\r\n",
    b"..dots\r\n",
    b".\r\n",
    b"BDAT 7\r\n",
    b"BDAT 3 LAST\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
    b"STARTTLS\r\n",
    b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n",
    b"AUTH LOGIN\r\n",
    b"AUTH SCRAM-SHA-256\r\n",
    b"dXNlcg==\r\n",
    b"*\r\n",
    b"\r\n",
    b"MAIL FROM:<\xc3\xa9@example.org> SMTPUTF8\r\n",
];

/// Reads the operations off the input.
struct Ops<'a>(&'a [u8]);

impl Ops<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken
    }
}

fn config(flags: u8) -> ServerConfig {
    let mut c = ServerConfig::from_service("mx.test", &Service::default());
    c.max_message_size = 64 + u64::from(flags & 0x0f) * 40;
    c.max_line_length = 30 + u32::from(flags & 0x30);
    c.max_recipients = 1 + u32::from(flags >> 6);
    c.error_limit = u32::from(flags & 7);
    c.tls_available = flags & 1 != 0;
    c.require_tls = flags & 0x80 != 0;
    if flags & 2 != 0 {
        c.auth_mechanisms = vec!["PLAIN".into(), "LOGIN".into(), "SCRAM-SHA-256".into()];
        c.auth_needs_tls = vec!["LOGIN".into()];
        c.require_auth = flags & 4 != 0;
    }
    if flags & 8 != 0 {
        c.ehlo_keywords = EhloKeywords::ALL.without(EhloKeywords::PIPELINING);
    }
    c
}

fn tls_info() -> TlsInfo {
    TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_128_GCM_SHA256".into(),
        peer_certificate: None,
    }
}

/// Every reply line is `ddd[ -]text` CRLF of at most 512 octets.
fn check_output(out: &[u8]) {
    for line in out.split_inclusive(|&b| b == b'\n') {
        assert!(line.len() <= 512, "{:?}", String::from_utf8_lossy(line));
        assert!(line.ends_with(b"\r\n"), "{:?}", String::from_utf8_lossy(line));
        assert!(line.len() >= 6, "{:?}", String::from_utf8_lossy(line));
        assert!(line[..3].iter().all(u8::is_ascii_digit));
        assert!(line[3] == b' ' || line[3] == b'-');
        let text = &line[..line.len() - 2];
        assert!(!text.contains(&b'\r') && !text.contains(&b'\n'));
    }
}

fuzz_target!(|data: &[u8]| {
    let mut ops = Ops(data);
    let Some(flags) = ops.byte() else {
        return;
    };
    let start = Instant::now();
    let mut now = start;
    let mut session = Session::new(Rc::new(config(flags)), now);
    let mut out = Vec::new();
    let mut pending: Vec<Event> = Vec::new();
    let mut open = false;
    let mut closed = false;
    let mut shutting_down = false;
    while let Some(op) = ops.byte() {
        match op % 8 {
            0 => {
                let n = usize::from(ops.byte().unwrap_or(0));
                let bytes = ops.bytes(n).to_vec();
                session.handle_input(&bytes, now);
            }
            1 | 2 => {
                let piece = PIECES[usize::from(ops.byte().unwrap_or(0)) % PIECES.len()];
                let cut = usize::from(ops.byte().unwrap_or(0)) % (piece.len() + 1);
                session.handle_input(&piece[..cut], now);
                session.handle_input(&piece[cut..], now);
            }
            3 => {
                now += Duration::from_secs(u64::from(ops.byte().unwrap_or(0)) * 4);
                if session.poll_timeout().is_some_and(|t| t <= now) {
                    session.handle_timeout(now);
                }
            }
            4 | 5 => {
                // The layer answers the oldest event that wants an answer.
                let choice = ops.byte().unwrap_or(0);
                if let Some(i) = pending.iter().position(|e| {
                    matches!(
                        e,
                        Event::CheckMail { .. }
                            | Event::CheckRcpt { .. }
                            | Event::MessageEnd(_)
                            | Event::StartTlsRequested
                            | Event::AuthStart { .. }
                            | Event::AuthResponse(_)
                    )
                }) {
                    let event = pending.remove(i);
                    let reject = Reply::new(550, "5.7.1", "refused");
                    match event {
                        Event::CheckMail { .. } | Event::CheckRcpt { .. } if choice & 1 == 0 => {
                            session.answer(Verdict::Accept, now)
                        }
                        Event::CheckMail { .. } | Event::CheckRcpt { .. } => {
                            session.answer(Verdict::Reject(reject), now)
                        }
                        Event::MessageEnd(_) if choice & 1 == 0 => {
                            session.commit_done(Ok("QUEUEID".into()), now)
                        }
                        Event::MessageEnd(_) => session
                            .commit_done(Err(Reply::new(451, "4.3.0", "write error")), now),
                        Event::StartTlsRequested if choice & 1 == 0 => {
                            session.start_tls(now);
                            if choice & 2 == 0 {
                                session.tls_established(tls_info(), now);
                            } else {
                                session.tls_failed(now);
                            }
                        }
                        Event::StartTlsRequested => session.tls_unavailable(now),
                        Event::AuthStart { .. } | Event::AuthResponse(_) => match choice % 4 {
                            0 => session.auth_challenge(b"challenge", now),
                            1 => session.auth_success("user".into(), None, now),
                            2 => session.auth_success("user".into(), Some(b"v=final"), now),
                            _ => session.auth_failure(
                                Reply::new(535, "5.7.8", "Authentication credentials invalid"),
                                now,
                            ),
                        },
                        _ => {}
                    }
                }
            }
            6 => {
                let b = ops.byte().unwrap_or(0);
                if b & 2 == 0 {
                    session.set_stress(b & 1 != 0);
                } else {
                    session.shut_down(now + Duration::from_secs(u64::from(b >> 2)), now);
                    shutting_down = true;
                }
            }
            _ => {
                // Calls out of turn must be harmless.
                match ops.byte().unwrap_or(0) % 4 {
                    0 => session.tls_established(tls_info(), now),
                    1 => session.tls_failed(now),
                    2 => session.answer(Verdict::Accept, now),
                    _ => session.commit_done(Ok("X".into()), now),
                }
            }
        }
        while let Some(bytes) = session.poll_transmit() {
            out.extend_from_slice(&bytes);
        }
        while let Some(event) = session.poll_event() {
            assert!(!closed, "an event after Closing: {event:?}");
            match &event {
                Event::MessageBegin => {
                    assert!(!open, "nested MessageBegin");
                    open = true;
                }
                Event::MessageData(d) => {
                    assert!(open, "data outside a message");
                    assert!(!d.is_empty());
                }
                Event::MessageEnd(t) => {
                    assert!(open, "end outside a message");
                    assert!(!t.rcpts.is_empty());
                    open = false;
                }
                Event::MessageAbort => {
                    assert!(open, "abort outside a message");
                    open = false;
                }
                Event::Closing(_) => {
                    assert!(!open, "closed with a message open");
                    closed = true;
                }
                Event::CheckMail { .. } => {
                    assert!(!shutting_down, "a transaction began while shutting down");
                }
                _ => {}
            }
            pending.push(event);
        }
        if let Some(t) = session.poll_timeout() {
            assert!(t >= start);
        }
    }
    check_output(&out);
});
