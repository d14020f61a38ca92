//! Tests of STARTTLS (RFC 3207): input sent before the handshake is never processed
//! (CVE-2011-0411), TLS forgets what the client said before it, the refusals, must-TLS
//! and implicit TLS (RFC 8314), and answers out of order are ignored.

use super::*;

fn tls_config() -> ServerConfig {
    ServerConfig {
        tls_available: true,
        ..config()
    }
}

/// Greeting, EHLO with STARTTLS offered, STARTTLS and its 220.
fn up_to_starttls() -> Vec<Step> {
    vec![
        s(GREETING),
        c("EHLO client.example\r\n"),
        s(EHLO_TLS_REPLY),
        c("STARTTLS\r\n"),
        s(READY),
    ]
}

/// A whole transaction from EHLO to QUIT, message `hi`.
fn transaction_after_ehlo() -> Vec<Step> {
    vec![
        c("MAIL FROM:<a@example.org>\r\n"),
        s(MAIL_OK),
        c("RCPT TO:<b@example.com>\r\n"),
        s(RCPT_OK),
        c("DATA\r\n"),
        s(GO_AHEAD),
        c("hi\r\n.\r\n"),
        s(QUEUED),
        c("QUIT\r\n"),
        s(BYE),
    ]
}

fn starttls_requests(o: &Outcome) -> usize {
    o.count(|e| matches!(e, Event::StartTlsRequested))
}

#[test]
fn input_pipelined_after_starttls_is_never_processed() {
    let steps = vec![
        s(GREETING),
        c("EHLO client.example\r\n"),
        s(EHLO_TLS_REPLY),
        c("STARTTLS\r\nNOOP\r\n"),
        s(READY),
        Step::Handshake(true),
        c("QUIT\r\n"),
        s(BYE),
    ];
    let o = check_tls(&tls_config(), TlsMode::default(), &steps);
    assert_eq!(o.out, [GREETING, EHLO_TLS_REPLY, READY, BYE].concat());
    assert!(o.tls && o.closed);
    assert_eq!(starttls_requests(&o), 1);
}

#[test]
fn input_arriving_before_the_handshake_ends_is_never_processed() {
    let steps = with(
        up_to_starttls(),
        vec![
            c("NOOP\r\nMAIL FROM:<a@example.org>\r\n"),
            Step::Handshake(true),
            c("QUIT\r\n"),
            s(BYE),
        ],
    );
    let o = check_tls(&tls_config(), TlsMode::default(), &steps);
    assert_eq!(o.out, [GREETING, EHLO_TLS_REPLY, READY, BYE].concat());
    assert_eq!(o.count(|e| matches!(e, Event::CheckMail { .. })), 0);
}

#[test]
fn tls_forgets_the_ehlo() {
    let steps = with(
        up_to_starttls(),
        vec![
            Step::Handshake(true),
            c("MAIL FROM:<a@example.org>\r\n"),
            s("503 5.5.1 Error: send HELO/EHLO first\r\n"),
        ],
    );
    let o = check_tls(&tls_config(), TlsMode::default(), &steps);
    assert!(o.tls);
    assert_eq!(o.count(|e| matches!(e, Event::CheckMail { .. })), 0);
}

#[test]
fn starttls_offered_before_tls_only_and_the_transaction_carries_tls() {
    let steps = with(
        up_to_starttls(),
        with(
            vec![
                Step::Handshake(true),
                c("EHLO client.example\r\n"),
                s(EHLO_REPLY),
                c("STARTTLS\r\n"),
                s("503 5.5.1 Error: TLS already active\r\n"),
            ],
            transaction_after_ehlo(),
        ),
    );
    let o = check_tls(&tls_config(), TlsMode::default(), &steps);
    assert!(o.tls);
    assert_eq!(starttls_requests(&o), 1);
    let t = transactions(&o);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].tls, Some(tls_info()));
    assert_eq!(o.committed(), vec![b"hi\r\n".to_vec()]);
}

#[test]
fn handshake_time_is_not_a_command_timeout() {
    let steps = with(
        up_to_starttls(),
        with(
            vec![
                secs(1000),
                Step::Handshake(true),
                c("EHLO client.example\r\n"),
                s(EHLO_REPLY),
            ],
            transaction_after_ehlo(),
        ),
    );
    let o = check_tls(&tls_config(), TlsMode::default(), &steps);
    assert_eq!(o.message_ends(), 1);
    assert_eq!(
        o.count(|e| matches!(e, Event::Closing(CloseReason::Quit))),
        1
    );
}

#[test]
fn failed_handshake_closes_quietly() {
    let steps = with(
        up_to_starttls(),
        vec![Step::Handshake(false), c("QUIT\r\n")],
    );
    let o = check_tls(&tls_config(), TlsMode::default(), &steps);
    assert_eq!(o.out, [GREETING, EHLO_TLS_REPLY, READY].concat());
    assert!(o.closed && !o.tls);
    assert_eq!(
        o.events.last(),
        Some(&Event::Closing(CloseReason::TlsFailed))
    );
}

#[test]
fn starttls_refusals() {
    // With a parameter.
    let o = check_tls(
        &tls_config(),
        TlsMode::default(),
        &[
            s(GREETING),
            c("EHLO client.example\r\n"),
            s(EHLO_TLS_REPLY),
            c("STARTTLS now\r\n"),
            s("501 5.5.4 Syntax error (no parameters allowed)\r\n"),
        ],
    );
    assert_eq!(starttls_requests(&o), 0);
    // Not offered: no certificate, or the keyword is not allowed.
    let mut no_keyword = tls_config();
    no_keyword.ehlo_keywords = EhloKeywords::ALL.without(EhloKeywords::STARTTLS);
    for cfg in [config(), no_keyword] {
        let o = check_tls(
            &cfg,
            TlsMode::default(),
            &[
                s(GREETING),
                c("EHLO client.example\r\n"),
                s(EHLO_REPLY),
                c("STARTTLS\r\n"),
                s("502 5.5.1 Error: command not implemented\r\n"),
            ],
        );
        assert_eq!(starttls_requests(&o), 0);
    }
    // Before EHLO, and after HELO (STARTTLS is an extension).
    let o = check_tls(
        &tls_config(),
        TlsMode::default(),
        &[
            s(GREETING),
            c("STARTTLS\r\n"),
            s("503 5.5.1 Error: send EHLO first\r\n"),
            c("HELO client.example\r\n"),
            s("250 mx.test\r\n"),
            c("STARTTLS\r\n"),
            s("503 5.5.1 Error: send EHLO first\r\n"),
        ],
    );
    assert_eq!(starttls_requests(&o), 0);
    // Inside a transaction; allowed again after RSET.
    let o = check_tls(
        &tls_config(),
        TlsMode::default(),
        &[
            s(GREETING),
            c("EHLO client.example\r\n"),
            s(EHLO_TLS_REPLY),
            c("MAIL FROM:<a@example.org>\r\n"),
            s(MAIL_OK),
            c("STARTTLS\r\n"),
            s("503 5.5.1 Error: MAIL transaction in progress\r\n"),
            c("RSET\r\n"),
            s(OK),
            c("STARTTLS\r\n"),
            s(READY),
        ],
    );
    assert_eq!(starttls_requests(&o), 1);
    assert!(!o.tls);
}

#[test]
fn tls_unavailable_answers_454_and_goes_on_in_plaintext() {
    let refuse = TlsMode {
        refuse: true,
        ..TlsMode::default()
    };
    let steps = with(
        vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            s(EHLO_TLS_REPLY),
            c("STARTTLS\r\nNOOP\r\n"),
            s("454 4.7.0 TLS not available due to temporary reason\r\n"),
            s(OK),
        ],
        transaction_after_ehlo(),
    );
    let o = check_tls(&tls_config(), refuse, &steps);
    assert!(!o.tls);
    let t = transactions(&o);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].tls, None);
}

#[test]
fn require_tls_refuses_mail_until_tls() {
    let cfg = ServerConfig {
        require_tls: true,
        ..tls_config()
    };
    let steps = with(
        vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            s(EHLO_TLS_REPLY),
            c("MAIL FROM:<a@example.org>\r\n"),
            s(MUST_TLS),
            c("RCPT TO:<b@example.com>\r\n"),
            s(MUST_TLS),
            c("DATA\r\n"),
            s(MUST_TLS),
            c("BDAT 6 LAST\r\nNOOP\r\n"),
            s(MUST_TLS),
            c("NOOP\r\n"),
            s(OK),
            c("STARTTLS\r\n"),
            s(READY),
            Step::Handshake(true),
            c("EHLO client.example\r\n"),
            s(EHLO_REPLY),
        ],
        transaction_after_ehlo(),
    );
    let o = check_tls(&cfg, TlsMode::default(), &steps);
    assert_eq!(o.count(|e| matches!(e, Event::CheckMail { .. })), 1);
    assert_eq!(o.count(|e| matches!(e, Event::MessageBegin)), 1);
    assert_eq!(transactions(&o)[0].tls, Some(tls_info()));
}

#[test]
fn require_tls_offers_and_takes_auth_only_after_tls() {
    let cfg = ServerConfig {
        require_tls: true,
        tls_available: true,
        ..auth_config()
    };
    let steps = vec![
        s(GREETING),
        c("EHLO client.example\r\n"),
        Step::Any,
        c("AUTH SCRAM-SHA-256\r\n"),
        s("538 5.7.11 Encryption required for requested authentication mechanism\r\n"),
        c("STARTTLS\r\n"),
        s(READY),
        Step::Handshake(true),
        c("EHLO client.example\r\n"),
        Step::Any,
        c("AUTH SCRAM-SHA-256\r\n"),
    ];
    let o = check_tls(&cfg, TlsMode::default(), &steps);
    let out = String::from_utf8_lossy(&o.out);
    let before_tls = out.split("220 2.0.0").next().unwrap_or_default();
    assert!(!before_tls.contains("AUTH SCRAM"), "{before_tls}");
    assert_eq!(
        o.count(|e| matches!(e, Event::AuthStart { .. })),
        1,
        "only after TLS"
    );
}

#[test]
fn implicit_tls_never_offers_starttls_and_meets_require_tls() {
    let implicit = TlsMode {
        implicit: true,
        ..TlsMode::default()
    };
    let cfg = ServerConfig {
        require_tls: true,
        ..tls_config()
    };
    let steps = with(
        vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            s(EHLO_REPLY),
            c("STARTTLS\r\n"),
            s("503 5.5.1 Error: TLS already active\r\n"),
        ],
        transaction_after_ehlo(),
    );
    let o = check_tls(&cfg, implicit, &steps);
    assert!(o.tls);
    assert_eq!(starttls_requests(&o), 0);
    assert_eq!(transactions(&o)[0].tls, Some(tls_info()));
}

#[test]
fn tls_calls_out_of_order_are_ignored() {
    let now = Instant::now();
    let mut session = Session::new(Rc::new(tls_config()), now);
    let (mut out, mut events) = (Vec::new(), Vec::new());
    drain(&mut session, now, &mut out, &mut events);
    session.start_tls(now);
    session.tls_unavailable(now);
    session.tls_established(tls_info(), now);
    session.tls_failed(now);
    assert!(session.poll_transmit().is_none());
    assert!(session.poll_event().is_none());
    assert!(!session.is_tls() && !session.is_closed());
    assert_eq!(session.tls(), None);
    // A pending STARTTLS is not answered by `answer` or `commit_done` either.
    session.handle_input(b"EHLO client.example\r\nSTARTTLS\r\n", now);
    while session.poll_event().is_some() {}
    session.poll_transmit();
    session.answer(Verdict::Accept, now);
    session.commit_done(Ok("X".into()), now);
    assert!(session.poll_transmit().is_none());
    assert!(!session.wants_input());
    session.start_tls(now);
    assert_eq!(session.poll_transmit(), Some(READY.to_vec()));
}
