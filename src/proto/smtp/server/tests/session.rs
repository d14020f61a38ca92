//! Tests of the session as a whole: the greeting and its delay, the EHLO reply, the
//! small commands (NOOP, VRFY, HELP, EXPN, QUIT) and the error limit. Each asserts the
//! exact replies of a transcript.

use super::*;

#[test]
fn ehlo_lists_offered_keywords_without_starttls_and_auth() {
    let o = check(
        &config(),
        &[s(GREETING), c("ehlo client.example\r\n"), s(EHLO_REPLY)],
    );
    assert_eq!(
        o.events,
        vec![Event::Helo {
            name: "client.example".into(),
            esmtp: true
        }]
    );
    let mut cfg = config();
    cfg.ehlo_keywords = EhloKeywords::NONE
        .with(EhloKeywords::SIZE)
        .with(EhloKeywords::STARTTLS);
    cfg.max_message_size = 77;
    check(
        &cfg,
        &[
            s(GREETING),
            c("EHLO [192.0.2.1]\r\n"),
            s("250-mx.test\r\n250 SIZE 77\r\n"),
        ],
    );
}

#[test]
fn error_limit_closes_with_421() {
    let mut cfg = config();
    cfg.error_limit = 3;
    let steps = vec![
        s(GREETING),
        c("FOO\r\nBAR\r\nNOOP\r\nEXPN x\r\nBAZ\r\nNOOP\r\n"),
        s(b"500 5.5.2 Error: command not recognized\r\n500 5.5.2 Error: command not recognized\r\n\
            250 2.0.0 Ok\r\n502 5.5.1 EXPN not available\r\n500 5.5.2 Error: command not recognized\r\n\
            421 4.7.0 mx.test Error: too many errors\r\n"),
    ];
    let o = check(&cfg, &steps);
    assert!(o.closed);
    assert_eq!(
        o.events.last(),
        Some(&Event::Closing(CloseReason::TooManyErrors))
    );
}

#[test]
fn refused_recipients_count_towards_the_error_limit() {
    let mut cfg = config();
    cfg.error_limit = 3;
    let steps = vec![
        s(GREETING),
        c(
            "EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n\
           RCPT TO:<nobody@example.com>\r\nRSET\r\nMAIL FROM:<a@example.org>\r\n\
           RCPT TO:<nobody@example.com>\r\nRCPT TO:<nobody@example.net>\r\n\
           RCPT TO:<c@example.com>\r\n",
        ),
    ];
    let o = check(&cfg, &steps);
    let text = String::from_utf8_lossy(&o.out);
    assert_eq!(text.matches("550 5.1.1 No such user").count(), 3, "{text}");
    assert!(
        text.ends_with("421 4.7.0 mx.test Error: too many errors\r\n"),
        "{text}"
    );
    assert!(o.closed);
    assert_eq!(
        o.events.last(),
        Some(&Event::Closing(CloseReason::TooManyErrors))
    );
}

#[test]
fn small_commands() {
    let steps = vec![
        c("EHLO c.example\r\nVRFY x\r\nhelp\r\nNOOP hi\r\nRSET\r\nSTARTTLS\r\nAUTH PLAIN\r\nEXPN list\r\n\
           MAIL FROM:<a@example.org>\r\nMAIL FROM:<a@example.org>\r\nRSET x\r\nEHLO\r\nDATA\r\n"),
        s([GREETING, EHLO_REPLY].concat()),
        s(b"252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery\r\n\
            214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP\r\n\
            250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n\
            502 5.5.1 Error: command not implemented\r\n502 5.5.1 Error: command not implemented\r\n\
            502 5.5.1 EXPN not available\r\n250 2.1.0 Ok\r\n503 5.5.1 Error: nested MAIL command\r\n\
            501 5.5.4 Syntax: RSET\r\n501 5.5.4 Syntax: EHLO hostname\r\n503 5.5.1 Error: need RCPT command\r\n"),
        c("QUIT\r\nNOOP\r\n"),
        s(b"221 2.0.0 Bye\r\n"),
    ];
    let o = check(&config(), &steps);
    assert!(o.closed);
}

#[test]
fn greeting_after_delay() {
    let mut cfg = config();
    cfg.greet_delay = Duration::from_secs(5);
    let o = check(
        &cfg,
        &[
            s(""),
            secs(4),
            s(""),
            secs(1),
            s(GREETING),
            c("NOOP\r\n"),
            s(OK),
        ],
    );
    assert!(!o.closed);
    let now = Instant::now();
    let session = Session::new(Rc::new(cfg), now);
    assert_eq!(session.poll_timeout(), Some(now + Duration::from_secs(5)));
}
