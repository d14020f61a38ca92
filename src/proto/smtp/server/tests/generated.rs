//! Generated sessions: random sequences of commands, content and noise from a fixed
//! seed, each fed through `check`; the session must never panic and every reply must
//! be well formed.

use super::*;

/// xorshift64: a tiny deterministic generator for test inputs.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PIECES: &[&[u8]] = &[
    b"EHLO c.example\r\n",
    b"HELO c.example\r\n",
    b"MAIL FROM:<a@example.org>\r\n",
    b"MAIL FROM:<> SIZE=100 BODY=8BITMIME\r\n",
    b"MAIL FROM:<spammer@example.org>\r\n",
    b"MAIL FROM:<tempfail@example.org>\r\n",
    b"RCPT TO:<b@example.com>\r\n",
    b"RCPT TO:<nobody@example.com> NOTIFY=NEVER\r\n",
    b"RCPT TO:<postmaster>\r\n",
    b"DATA\r\n",
    b"Subject: x\r\n\r\n",
    b"..dots\r\n",
    b".\r\n",
    b"\r\n.\r\n",
    b"BDAT 7\r\n",
    b"BDAT 3 LAST\r\n",
    b"BDAT 0 LAST\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY x\r\n",
    b"QUIT\r\n",
    b"\n",
    b"\r",
    b"\0",
    b"Received: x\r\n",
    b"\xff\xfe",
    b"bdat 99999999999999 last\r\n",
    b"MAIL FROM:<\xc3\xa9@example.org> SMTPUTF8\r\n",
    b"STARTTLS\r\n",
    b"STARTTLS\r\nMAIL FROM:<a@example.org>\r\n",
    b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n",
    b"AUTH LOGIN\r\n",
    b"dXNlcg==\r\n",
    b"cGFzcw==\r\n",
    b"AUTH SCRAM-SHA-256 c2NyYW0=\r\n",
    b"AUTH CRAM-MD5\r\n",
    b"AUTH EXTERNAL =\r\n",
    b"*\r\n",
    b"MAIL FROM:<a@example.org> AUTH=<>\r\n",
];

#[test]
fn generated_sessions_never_panic_and_reply_well() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let mut cfg = config();
        cfg.max_line_length = 20 + rng.below(100) as u32;
        cfg.max_message_size = 10 + rng.below(300) as u64;
        cfg.max_recipients = 1 + rng.below(3) as u32;
        cfg.error_limit = rng.below(12) as u32;
        cfg.max_messages = rng.below(4) as u32;
        cfg.tls_available = rng.below(2) == 0;
        cfg.require_tls = rng.below(3) == 0;
        if rng.below(2) == 0 {
            cfg.auth_mechanisms = auth_config().auth_mechanisms;
            cfg.auth_needs_tls = auth_config().auth_needs_tls;
            cfg.require_auth = rng.below(3) == 0;
        }
        let mut now = Instant::now();
        let mut session = Session::new(Rc::new(cfg), now);
        let (mut out, mut events) = (Vec::new(), Vec::new());
        drain(&mut session, now, &mut out, &mut events);
        for _ in 0..rng.below(40) {
            let mut bytes = PIECES[rng.below(PIECES.len())].to_vec();
            if rng.below(10) == 0 {
                bytes.extend((0..rng.below(600)).map(|_| b"ab\r\n."[rng.below(5)]));
            }
            let cut = rng.below(bytes.len() + 1);
            for part in [&bytes[..cut], &bytes[cut..]] {
                session.handle_input(part, now);
                drain(&mut session, now, &mut out, &mut events);
            }
            if rng.below(20) == 0 {
                now += Duration::from_secs(rng.below(400) as u64);
                session.handle_timeout(now);
                drain(&mut session, now, &mut out, &mut events);
            }
            // The layer's handshake ends, whether or not one is under way.
            match rng.below(8) {
                0 => session.tls_established(tls_info(), now),
                1 => session.tls_failed(now),
                _ => {}
            }
            drain(&mut session, now, &mut out, &mut events);
        }
        assert!(
            well_formed(&out),
            "round {round}: {}",
            String::from_utf8_lossy(&out)
        );
        // Messages begin and end (or abort) in pairs, and nothing follows Closing.
        let mut open = false;
        for (i, e) in events.iter().enumerate() {
            match e {
                Event::MessageBegin => {
                    assert!(!open, "round {round}: nested begin");
                    open = true;
                }
                Event::MessageData(_) => assert!(open, "round {round}: data outside a message"),
                Event::MessageEnd(t) => {
                    assert!(open, "round {round}: end outside a message");
                    assert!(!t.rcpts.is_empty());
                    assert_eq!(t.mail_auth.is_some(), t.mail_params.auth.is_some());
                    open = false;
                }
                Event::MessageAbort => {
                    assert!(open, "round {round}: abort outside a message");
                    open = false;
                }
                Event::Closing(_) => {
                    assert_eq!(i, events.len() - 1, "round {round}: events after Closing");
                    assert!(!open, "round {round}: closed with a message open");
                }
                _ => {}
            }
        }
        assert!(session.input.len() <= MAX_PENDING_INPUT);
    }
}
