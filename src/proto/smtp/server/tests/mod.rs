//! Transcript tests of the SMTP server session, and the test layer they share: a
//! transcript of client writes, expected server output and passing time is fed whole,
//! one byte at a time and split in two at every index, and every run must give the same
//! output and events (`check`); the test policy (`respond`) answers every event the way a
//! layer would. Every reply the session writes is checked to be well formed.

use super::*;
use crate::proto::smtp::command::{Body, Notify, Ret};

mod auth;
mod bad_input;
mod framing;
mod generated;
mod session;
mod shutdown;
mod starttls;
mod transaction;

const GREETING: &[u8] = b"220 mx.test ESMTP drawbridge\r\n";
const EHLO_REPLY: &[u8] = b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n\
    250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
const OK: &[u8] = b"250 2.0.0 Ok\r\n";
const MAIL_OK: &[u8] = b"250 2.1.0 Ok\r\n";
const RCPT_OK: &[u8] = b"250 2.1.5 Ok\r\n";
const GO_AHEAD: &[u8] = b"354 End data with <CR><LF>.<CR><LF>\r\n";
const QUEUED: &[u8] = b"250 2.0.0 Ok: queued as TESTID\r\n";

fn config() -> ServerConfig {
    ServerConfig {
        host_name: "mx.test".into(),
        max_message_size: 10_000,
        max_recipients: 3,
        max_line_length: 1000,
        command_timeout: Duration::from_secs(300),
        data_timeout: Duration::from_secs(180),
        // Deadlines out of the way of the timeout tests; theirs set them.
        command_deadline: Duration::from_secs(7200),
        data_deadline: Duration::from_secs(7200),
        min_data_rate: 500,
        stress_timeout: Duration::from_secs(10),
        max_session_time: Duration::from_secs(3600),
        max_messages: 5,
        error_limit: 10,
        greet_delay: Duration::ZERO,
        ehlo_keywords: EhloKeywords::ALL,
        tls_available: false,
        require_tls: false,
        auth_mechanisms: Vec::new(),
        auth_needs_tls: Vec::new(),
        require_auth: false,
    }
}

/// One step of a transcript.
#[derive(Clone, Debug)]
enum Step {
    /// The client writes these bytes.
    C(Vec<u8>),
    /// The server's next output is exactly this (checked when the transcript is fed
    /// whole; split runs compare the total with the whole run).
    S(Vec<u8>),
    /// Time passes, then `handle_timeout`.
    Wait(Duration),
    /// Everything the server has written so far is not checked further.
    Any,
    /// The layer's TLS handshake ends: `tls_established` with `tls_info()` (true) or
    /// `tls_failed` (false). Client writes before it are fed before it.
    Handshake(bool),
    /// The gateway stops: `shut_down` with a deadline this long from now. Client writes
    /// before it are fed before it.
    ShutDown(Duration),
}
use Step::Wait;

fn c(b: impl AsRef<[u8]>) -> Step {
    Step::C(b.as_ref().to_vec())
}
fn s(b: impl AsRef<[u8]>) -> Step {
    Step::S(b.as_ref().to_vec())
}
fn secs(n: u64) -> Step {
    Wait(Duration::from_secs(n))
}

/// What one run produced.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Outcome {
    out: Vec<u8>,
    /// Events with adjacent `MessageData` merged.
    events: Vec<Event>,
    closed: bool,
    tls: bool,
    /// `authenticated_user()` at the end.
    user: Option<String>,
}

impl Outcome {
    /// Content of every committed message.
    fn committed(&self) -> Vec<Vec<u8>> {
        let mut done = Vec::new();
        let mut cur = None::<Vec<u8>>;
        for e in &self.events {
            match e {
                Event::MessageBegin => cur = Some(Vec::new()),
                Event::MessageData(d) => cur
                    .as_mut()
                    .expect("data inside a message")
                    .extend_from_slice(d),
                Event::MessageEnd(_) => done.push(cur.take().expect("end inside a message")),
                Event::MessageAbort => cur = None,
                _ => {}
            }
        }
        done
    }

    fn count(&self, pred: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|e| pred(e)).count()
    }

    fn message_ends(&self) -> usize {
        self.count(|e| matches!(e, Event::MessageEnd(_)))
    }
}

/// How the test layer treats TLS.
#[derive(Clone, Copy, Debug, Default)]
struct TlsMode {
    /// Start sessions with `new_tls` (RFC 8314 implicit TLS).
    implicit: bool,
    /// Answer `StartTlsRequested` with `tls_unavailable` instead of `start_tls`.
    refuse: bool,
    /// The client presents no certificate (`TlsInfo::peer_certificate` is `None`).
    no_client_cert: bool,
}

thread_local! {
    static TLS_MODE: std::cell::Cell<TlsMode> = const {
        std::cell::Cell::new(TlsMode { implicit: false, refuse: false, no_client_cert: false })
    };
}

/// `check` with the test layer treating TLS as `mode`.
fn check_tls(cfg: &ServerConfig, mode: TlsMode, steps: &[Step]) -> Outcome {
    TLS_MODE.with(|m| m.set(mode));
    let o = check(cfg, steps);
    TLS_MODE.with(|m| m.set(TlsMode::default()));
    o
}

fn tls_info() -> TlsInfo {
    let peer_certificate = PeerCertificate {
        subject: "CN=client.example".into(),
        common_name: Some("client.example".into()),
        san_emails: vec!["a@example.org".into()],
    };
    TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_256_GCM_SHA384".into(),
        peer_certificate: (!TLS_MODE.with(|m| m.get().no_client_cert)).then_some(peer_certificate),
    }
}

/// The test SASL layer, stateless: it answers by the line's content. `user` and
/// `pass` (LOGIN) and `\0user\0pass` (PLAIN) authenticate `user`; `scram` does too,
/// with server-final data `v=xyz`; `*` cancels; anything else is refused.
fn respond_auth(session: &mut Session, line: &[u8], now: Instant) {
    match line {
        b"*" => session.auth_failure(Reply::new(501, "5.7.0", "Authentication aborted"), now),
        b"dXNlcg==" => session.auth_challenge(b"Password:", now),
        b"cGFzcw==" | b"AHVzZXIAcGFzcw==" => session.auth_success("user".into(), None, now),
        b"c2NyYW0=" => session.auth_success("user".into(), Some(b"v=xyz"), now),
        _ => session.auth_failure(
            Reply::new(535, "5.7.8", "Authentication credentials invalid"),
            now,
        ),
    }
}

/// The test policy: senders `spammer@…` and recipients `nobody@…` are refused; a
/// message from `tempfail@…` fails to commit; everything else is accepted. STARTTLS
/// is answered as `TLS_MODE` says.
fn respond(session: &mut Session, event: &Event, now: Instant) {
    match event {
        Event::AuthStart {
            initial: Some(line),
            ..
        }
        | Event::AuthResponse(line) => respond_auth(session, line, now),
        Event::AuthStart { mechanism, .. } if mechanism == "LOGIN" => {
            session.auth_challenge(b"Username:", now)
        }
        Event::AuthStart { .. } => session.auth_challenge(b"", now),
        Event::StartTlsRequested if TLS_MODE.with(|m| m.get().refuse) => {
            session.tls_unavailable(now)
        }
        Event::StartTlsRequested => session.start_tls(now),
        Event::CheckMail { from, .. } if from.starts_with("spammer@") => session.answer(
            Verdict::Reject(Reply::new(550, "5.7.1", "Sender refused")),
            now,
        ),
        Event::CheckRcpt { to, .. } if to.local_part() == "nobody" => session.answer(
            Verdict::Reject(Reply::new(550, "5.1.1", "No such user")),
            now,
        ),
        Event::CheckMail { .. } | Event::CheckRcpt { .. } => session.answer(Verdict::Accept, now),
        Event::MessageEnd(t) if t.from.starts_with("tempfail@") => {
            session.commit_done(Err(Reply::new(451, "4.3.0", "Queue busy")), now)
        }
        Event::MessageEnd(_) => session.commit_done(Ok("TESTID".into()), now),
        _ => {}
    }
}

/// Drains output and events, answering as the policy says, until quiet.
fn drain(session: &mut Session, now: Instant, out: &mut Vec<u8>, events: &mut Vec<Event>) {
    loop {
        if let Some(bytes) = session.poll_transmit() {
            assert!(!bytes.is_empty());
            out.extend_from_slice(&bytes);
        }
        let Some(event) = session.poll_event() else {
            break;
        };
        if let Event::MessageData(d) = &event {
            assert!(!d.is_empty(), "empty MessageData");
        }
        respond(session, &event, now);
        match (events.last_mut(), event) {
            (Some(Event::MessageData(prev)), Event::MessageData(more)) => {
                prev.extend_from_slice(&more)
            }
            (_, event) => events.push(event),
        }
    }
    assert!(session.poll_transmit().is_none());
}

/// Runs `steps` with the client writes cut into `chunks` pieces per segment.
/// `cut(offset, segment)` gives the chunk lengths for a segment starting at `offset`
/// in the whole client stream; `None` feeds each `C` step as written and checks
/// every `S` step.
fn execute(
    cfg: &ServerConfig,
    steps: &[Step],
    cut: Option<&dyn Fn(usize, usize) -> Vec<usize>>,
) -> Outcome {
    let mut now = Instant::now();
    let mut session = if TLS_MODE.with(|m| m.get().implicit) {
        Session::new_tls(Rc::new(cfg.clone()), tls_info(), now)
    } else {
        Session::new(Rc::new(cfg.clone()), now)
    };
    let (mut out, mut events) = (Vec::new(), Vec::new());
    drain(&mut session, now, &mut out, &mut events);
    let mut checked = 0;
    let mut segment = Vec::new();
    let mut offset = 0;
    let mut feed = |session: &mut Session,
                    seg: &mut Vec<u8>,
                    now,
                    out: &mut Vec<u8>,
                    events: &mut Vec<Event>| {
        let mut lens = match cut {
            Some(cut) => cut(offset, seg.len()),
            None => vec![seg.len()],
        };
        lens.retain(|&n| n > 0);
        assert_eq!(lens.iter().sum::<usize>(), seg.len());
        let mut at = 0;
        for n in lens {
            session.handle_input(&seg[at..at + n], now);
            drain(session, now, out, events);
            at += n;
        }
        offset += seg.len();
        seg.clear();
    };
    for step in steps {
        match step {
            Step::C(bytes) => {
                segment.extend_from_slice(bytes);
                if cut.is_none() {
                    feed(&mut session, &mut segment, now, &mut out, &mut events);
                }
            }
            Step::S(expected) => {
                if cut.is_none() {
                    let got = &out[checked..];
                    let got = &got[..got.len().min(expected.len())];
                    assert_eq!(
                        String::from_utf8_lossy(got),
                        String::from_utf8_lossy(expected),
                        "server output"
                    );
                    checked += expected.len();
                }
            }
            Step::Any => checked = out.len(),
            Wait(d) => {
                feed(&mut session, &mut segment, now, &mut out, &mut events);
                now += *d;
                if let Some(t) = session.poll_timeout() {
                    if now >= t {
                        session.handle_timeout(now);
                    }
                }
                drain(&mut session, now, &mut out, &mut events);
            }
            Step::Handshake(ok) => {
                feed(&mut session, &mut segment, now, &mut out, &mut events);
                if *ok {
                    session.tls_established(tls_info(), now);
                } else {
                    session.tls_failed(now);
                }
                drain(&mut session, now, &mut out, &mut events);
            }
            Step::ShutDown(grace) => {
                feed(&mut session, &mut segment, now, &mut out, &mut events);
                session.shut_down(now + *grace, now);
                drain(&mut session, now, &mut out, &mut events);
            }
        }
    }
    feed(&mut session, &mut segment, now, &mut out, &mut events);
    Outcome {
        out,
        events,
        closed: session.is_closed(),
        tls: session.is_tls(),
        user: {
            assert_eq!(
                session.is_authenticated(),
                session.authenticated_user().is_some()
            );
            session.authenticated_user().map(str::to_string)
        },
    }
}

/// Runs a transcript whole, one byte at a time and split in two at every index; all
/// runs must give the same output and events. Returns the outcome.
fn check(cfg: &ServerConfig, steps: &[Step]) -> Outcome {
    let whole = execute(cfg, steps, None);
    let total: usize = steps
        .iter()
        .map(|s| if let Step::C(b) = s { b.len() } else { 0 })
        .sum();
    let bytewise = execute(cfg, steps, Some(&|_, len| vec![1; len]));
    assert_eq!(bytewise, whole, "one byte at a time");
    for i in 0..=total {
        let split = move |offset: usize, len: usize| {
            if (offset..offset + len).contains(&i) {
                vec![i - offset, offset + len - i]
            } else {
                vec![len]
            }
        };
        let run = execute(cfg, steps, Some(&split));
        assert_eq!(run, whole, "split at {i}");
    }
    assert!(
        well_formed(&whole.out),
        "{}",
        String::from_utf8_lossy(&whole.out)
    );
    whole
}

/// Every reply line is `ddd[ -]text` CRLF, at most 512 octets; error replies carry an
/// enhanced code of their class; no CR or LF stands alone.
fn well_formed(out: &[u8]) -> bool {
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        return false;
    }
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let Some(line) = line.strip_suffix(b"\r") else {
            return false;
        };
        if line.len() + 2 > crate::proto::smtp::reply::MAX_REPLY_LINE
            || line.contains(&b'\r')
            || line.len() < 4
        {
            return false;
        }
        let Ok(text) = std::str::from_utf8(line) else {
            return false;
        };
        let code = &text[..3];
        if !code.bytes().all(|b| b.is_ascii_digit()) || !matches!(code.as_bytes()[0], b'2'..=b'5') {
            return false;
        }
        if !matches!(line[3], b' ' | b'-') {
            return false;
        }
        let enhanced = text[4..]
            .split(' ')
            .next()
            .and_then(crate::proto::smtp::reply::Enhanced::parse);
        match enhanced {
            Some(e) if e.class != code.as_bytes()[0] - b'0' => return false,
            None if matches!(code.as_bytes()[0], b'4' | b'5') => return false,
            _ => {}
        }
    }
    true
}

/// True when each of `parts` occurs in `out`, in order.
fn in_order(out: &[u8], parts: &[&[u8]]) -> bool {
    let mut at = 0;
    for p in parts {
        match out[at..].windows(p.len()).position(|w| w == *p) {
            Some(i) => at += i + p.len(),
            None => return false,
        }
    }
    true
}

fn has(out: &[u8], part: &[u8]) -> bool {
    in_order(out, &[part])
}

/// The usual opening: greeting, EHLO, one sender, one recipient.
fn opening() -> Vec<Step> {
    vec![
        s(GREETING),
        c("EHLO client.example\r\n"),
        Step::Any,
        c("MAIL FROM:<a@example.org>\r\n"),
        s(MAIL_OK),
        c("RCPT TO:<b@example.com>\r\n"),
        s(RCPT_OK),
    ]
}

fn with(mut steps: Vec<Step>, more: Vec<Step>) -> Vec<Step> {
    steps.extend(more);
    steps
}

fn in_data(content: &[u8]) -> Vec<Step> {
    with(opening(), vec![c("DATA\r\n"), s(GO_AHEAD), c(content)])
}

const EHLO_TLS_REPLY: &[u8] =
    b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n\
    250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
const READY: &[u8] = b"220 2.0.0 Ready to start TLS\r\n";
const BYE: &[u8] = b"221 2.0.0 Bye\r\n";
const MUST_TLS: &[u8] = b"530 5.7.0 Must issue a STARTTLS command first\r\n";

fn transactions(o: &Outcome) -> Vec<&Transaction> {
    o.events
        .iter()
        .filter_map(|e| match e {
            Event::MessageEnd(t) => Some(&**t),
            _ => None,
        })
        .collect()
}

/// Every mechanism, CRAM-MD5 only under TLS.
fn auth_config() -> ServerConfig {
    ServerConfig {
        auth_mechanisms: ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256", "EXTERNAL"]
            .map(String::from)
            .to_vec(),
        auth_needs_tls: vec!["cram-md5".into()],
        ..config()
    }
}
