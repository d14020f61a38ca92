//! Tests of AUTH (RFC 4954): the exchanges of PLAIN, LOGIN and SCRAM-like mechanisms
//! against the test layer, cancelling, the refusals, mechanisms that need TLS, the
//! response line bound, must-authenticate and the error limit.

use super::*;

const EHLO_AUTH_REPLY: &[u8] =
    b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n\
    250-ENHANCEDSTATUSCODES\r\n250-AUTH PLAIN LOGIN SCRAM-SHA-256\r\n250-DSN\r\n\
    250-SMTPUTF8\r\n250 CHUNKING\r\n";
const AUTH_OK: &[u8] = b"235 2.7.0 Authentication successful\r\n";
const AUTH_BAD: &[u8] = b"535 5.7.8 Authentication credentials invalid\r\n";
/// PLAIN initial response for `user`/`pass`.
const PLAIN_USER: &str = "AHVzZXIAcGFzcw==";

fn auth_starts(o: &Outcome) -> Vec<(String, Option<Vec<u8>>)> {
    o.events
        .iter()
        .filter_map(|e| match e {
            Event::AuthStart { mechanism, initial } => Some((mechanism.clone(), initial.clone())),
            _ => None,
        })
        .collect()
}

fn auth_responses(o: &Outcome) -> Vec<Vec<u8>> {
    o.events
        .iter()
        .filter_map(|e| match e {
            Event::AuthResponse(line) => Some(line.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn auth_plain_with_initial_response_then_a_transaction() {
    let steps = vec![
        s(GREETING),
        c("EHLO client.example\r\n"),
        s(EHLO_AUTH_REPLY),
        c(format!("auth plain {PLAIN_USER}\r\n")),
        s(AUTH_OK),
        c("MAIL FROM:<a@example.org> AUTH=a+2Bb@example.org\r\n"),
        s(MAIL_OK),
        c("RCPT TO:<b@example.com>\r\nDATA\r\n"),
        s([RCPT_OK, GO_AHEAD].concat()),
        c("hi\r\n.\r\n"),
        s(QUEUED),
    ];
    let o = check(&auth_config(), &steps);
    assert_eq!(
        auth_starts(&o),
        vec![("PLAIN".into(), Some(PLAIN_USER.as_bytes().to_vec()))]
    );
    assert_eq!(o.user.as_deref(), Some("user"));
    let t = transactions(&o);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].auth_user.as_deref(), Some("user"));
    assert_eq!(t[0].mail_auth.as_deref(), Some("a+b@example.org"));
    assert_eq!(t[0].mail_params.auth.as_deref(), Some("a+b@example.org"));
}

#[test]
fn auth_login_with_two_challenges() {
    let steps = vec![
        s(GREETING),
        c("EHLO client.example\r\n"),
        s(EHLO_AUTH_REPLY),
        c("AUTH LOGIN\r\n"),
        s("334 VXNlcm5hbWU6\r\n"),
        c("dXNlcg==\r\n"),
        s("334 UGFzc3dvcmQ6\r\n"),
        c("cGFzcw==\r\n"),
        s(AUTH_OK),
        c("MAIL FROM:<a@example.org>\r\n"),
        s(MAIL_OK),
        c("RCPT TO:<b@example.com>\r\nDATA\r\nhi\r\n.\r\n"),
        s([RCPT_OK, GO_AHEAD, QUEUED].concat()),
    ];
    let o = check(&auth_config(), &steps);
    assert_eq!(auth_starts(&o), vec![("LOGIN".into(), None)]);
    assert_eq!(
        auth_responses(&o),
        vec![b"dXNlcg==".to_vec(), b"cGFzcw==".to_vec()]
    );
    assert_eq!(o.user.as_deref(), Some("user"));
    let t = transactions(&o);
    assert_eq!(t[0].auth_user.as_deref(), Some("user"));
    assert_eq!(t[0].mail_auth, None);
}

#[test]
fn auth_success_with_final_data_needs_an_empty_line() {
    let steps = vec![
        s(GREETING),
        c("EHLO client.example\r\n"),
        s(EHLO_AUTH_REPLY),
        c("AUTH SCRAM-SHA-256 c2NyYW0=\r\n"),
        s("334 dj14eXo=\r\n"),
        c("\r\n"),
        s(AUTH_OK),
    ];
    let o = check(&auth_config(), &steps);
    assert_eq!(o.user.as_deref(), Some("user"));
    assert!(auth_responses(&o).is_empty());

    let steps = vec![
        s(GREETING),
        c("EHLO client.example\r\n"),
        s(EHLO_AUTH_REPLY),
        c("AUTH SCRAM-SHA-256 c2NyYW0=\r\n"),
        s("334 dj14eXo=\r\n"),
        c("c2NyYW0=\r\n"),
        s("501 5.5.2 Error: expected an empty line\r\n"),
        c("MAIL FROM:<a@example.org> AUTH=<>\r\n"),
        s(MAIL_OK),
    ];
    let mut cfg = auth_config();
    cfg.require_auth = false;
    let o = check(&cfg, &steps);
    assert_eq!(o.user, None);
    let mail = o.events.iter().find_map(|e| match e {
        Event::CheckMail { params, .. } => Some(params.auth.clone()),
        _ => None,
    });
    assert_eq!(mail, Some(Some(String::new())));
}

#[test]
fn auth_cancelled_and_the_session_goes_on() {
    let steps = vec![
        s(GREETING),
        c("EHLO client.example\r\n"),
        s(EHLO_AUTH_REPLY),
        c("AUTH PLAIN\r\n"),
        s("334 \r\n"),
        c("*\r\n"),
        s("501 5.7.0 Authentication aborted\r\n"),
        c("NOOP\r\n"),
        s(OK),
        c("AUTH PLAIN =\r\n"),
        s(AUTH_BAD),
        c("AUTH PLAIN !!not-base64\r\n"),
        s(AUTH_BAD),
        c("AUTH PLAIN\r\n"),
        s("334 \r\n"),
        c(format!("{PLAIN_USER}\r\n")),
        s(AUTH_OK),
    ];
    let o = check(&auth_config(), &steps);
    assert_eq!(auth_responses(&o), vec![b"*".to_vec(), PLAIN_USER.into()]);
    // `=` and bad base64 go to the SASL layer as sent.
    let starts = auth_starts(&o);
    assert_eq!(starts[1].1.as_deref(), Some(&b"="[..]));
    assert_eq!(starts[2].1.as_deref(), Some(&b"!!not-base64"[..]));
    assert_eq!(o.user.as_deref(), Some("user"));
}

#[test]
fn auth_refusals() {
    let steps = vec![
        s(GREETING),
        c(format!("AUTH PLAIN {PLAIN_USER}\r\n")),
        s("503 5.5.1 Error: send EHLO first\r\n"),
        c("HELO client.example\r\n"),
        Step::Any,
        c(format!("AUTH PLAIN {PLAIN_USER}\r\n")),
        s("503 5.5.1 Error: send EHLO first\r\n"),
        c("EHLO client.example\r\n"),
        s(EHLO_AUTH_REPLY),
        c("AUTH\r\nAUTH PLAIN a b\r\nAUTH PL\x01AIN\r\n"),
        s("501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n\
           501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n\
           501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n"),
        c("AUTH DIGEST-MD5\r\nAUTH EXTERNAL =\r\n"),
        s("504 5.5.4 Unrecognized authentication type\r\n\
           504 5.5.4 Unrecognized authentication type\r\n"),
        c("AUTH CRAM-MD5\r\n"),
        s("538 5.7.11 Encryption required for requested authentication mechanism\r\n"),
        c("MAIL FROM:<a@example.org>\r\n"),
        s(MAIL_OK),
        c(format!("AUTH PLAIN {PLAIN_USER}\r\n")),
        s("503 5.5.1 Error: MAIL transaction in progress\r\n"),
        c(format!("RSET\r\nAUTH PLAIN {PLAIN_USER}\r\n")),
        s([OK, AUTH_OK].concat()),
        c(format!("AUTH PLAIN {PLAIN_USER}\r\n")),
        s("503 5.5.1 Error: already authenticated\r\n"),
    ];
    let cfg = ServerConfig {
        error_limit: 0,
        ..auth_config()
    };
    let o = check(&cfg, &steps);
    assert_eq!(auth_starts(&o).len(), 1);
    assert_eq!(o.count(|e| matches!(e, Event::Rejected { .. })), 10);
    assert_eq!(o.user.as_deref(), Some("user"));
    assert!(!o.closed);
}

#[test]
fn auth_not_offered_without_mechanisms_or_the_keyword() {
    let steps = vec![
        s(GREETING),
        c("EHLO client.example\r\n"),
        s(EHLO_REPLY),
        c(format!("AUTH PLAIN {PLAIN_USER}\r\n")),
        s("502 5.5.1 Error: command not implemented\r\n"),
        c("MAIL FROM:<a@example.org> AUTH=<>\r\n"),
        s("555 5.5.4 Unsupported option: AUTH\r\n"),
    ];
    check(&config(), &steps);
    let cfg = ServerConfig {
        ehlo_keywords: EhloKeywords::ALL.without(EhloKeywords::AUTH),
        ..auth_config()
    };
    let o = check(&cfg, &steps);
    assert!(auth_starts(&o).is_empty());
    // Only TLS-restricted mechanisms: nothing to offer before TLS, but AUTH exists.
    let cfg = ServerConfig {
        auth_mechanisms: vec!["CRAM-MD5".into()],
        ..auth_config()
    };
    let steps = vec![
        s(GREETING),
        c("EHLO client.example\r\n"),
        s(EHLO_REPLY),
        c(format!("AUTH PLAIN {PLAIN_USER}\r\nAUTH cram-md5\r\n")),
        s("504 5.5.4 Unrecognized authentication type\r\n\
           538 5.7.11 Encryption required for requested authentication mechanism\r\n"),
        c("MAIL FROM:<a@example.org> AUTH=<>\r\n"),
        s("555 5.5.4 Unsupported option: AUTH\r\n"),
    ];
    check(&cfg, &steps);
}

#[test]
fn restricted_mechanisms_and_external_after_tls() {
    let cfg = ServerConfig {
        tls_available: true,
        ..auth_config()
    };
    let steps = vec![
        s(GREETING),
        c("EHLO client.example\r\n"),
        Step::Any,
        c("AUTH EXTERNAL =\r\nAUTH CRAM-MD5\r\n"),
        s("504 5.5.4 Unrecognized authentication type\r\n\
           538 5.7.11 Encryption required for requested authentication mechanism\r\n"),
        c("STARTTLS\r\n"),
        s(READY),
        Step::Handshake(true),
        c("EHLO client.example\r\n"),
        Step::Any,
        c("AUTH CRAM-MD5\r\n"),
        s("334 \r\n"),
        c(format!("{PLAIN_USER}\r\n")),
        s(AUTH_OK),
    ];
    let o = check(&cfg, &steps);
    let before = b"250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n\
        250-AUTH PLAIN LOGIN SCRAM-SHA-256\r\n250-DSN\r\n";
    let after = b"250-ENHANCEDSTATUSCODES\r\n\
        250-AUTH PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256 EXTERNAL\r\n250-DSN\r\n";
    assert!(in_order(&o.out, &[before, READY, after]));
    assert_eq!(auth_starts(&o), vec![("CRAM-MD5".into(), None)]);
    assert_eq!(o.user.as_deref(), Some("user"));

    // Under TLS without a client certificate EXTERNAL is neither offered nor usable.
    let no_cert = TlsMode {
        implicit: true,
        no_client_cert: true,
        ..TlsMode::default()
    };
    let steps = vec![
        s(GREETING),
        c("EHLO client.example\r\n"),
        Step::Any,
        c("AUTH EXTERNAL =\r\n"),
        s("504 5.5.4 Unrecognized authentication type\r\n"),
    ];
    let o = check_tls(&cfg, no_cert, &steps);
    assert!(has(
        &o.out,
        b"250-AUTH PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256\r\n"
    ));
    let implicit = TlsMode {
        implicit: true,
        ..TlsMode::default()
    };
    let steps = vec![
        s(GREETING),
        c("EHLO client.example\r\n"),
        Step::Any,
        c("AUTH EXTERNAL =\r\n"),
        s(AUTH_BAD),
    ];
    let o = check_tls(&cfg, implicit, &steps);
    assert_eq!(
        auth_starts(&o),
        vec![("EXTERNAL".into(), Some(b"=".to_vec()))]
    );
}

#[test]
fn tls_forgets_authentication() {
    let cfg = ServerConfig {
        tls_available: true,
        require_auth: true,
        ..auth_config()
    };
    let steps = vec![
        s(GREETING),
        c("EHLO client.example\r\n"),
        Step::Any,
        c(format!("AUTH PLAIN {PLAIN_USER}\r\n")),
        s(AUTH_OK),
        c("STARTTLS\r\n"),
        s(READY),
        Step::Handshake(true),
        c("EHLO client.example\r\n"),
        Step::Any,
        c("MAIL FROM:<a@example.org>\r\n"),
        s("530 5.7.0 Authentication required\r\n"),
    ];
    let o = check(&cfg, &steps);
    assert!(o.tls);
    assert_eq!(o.user, None);
}

#[test]
fn response_line_over_the_rfc_4954_bound() {
    let at_bound = "A".repeat(MAX_AUTH_LINE);
    let over = "A".repeat(MAX_AUTH_LINE + 1);
    let steps = vec![
        s(GREETING),
        c("EHLO client.example\r\n"),
        s(EHLO_AUTH_REPLY),
        c("AUTH PLAIN\r\n"),
        s("334 \r\n"),
        c(format!("{at_bound}\r\n")),
        s(AUTH_BAD),
        c("AUTH PLAIN\r\n"),
        s("334 \r\n"),
        c(format!("{over}\r\n")),
        s("500 5.5.6 Authentication Exchange line is too long\r\n"),
        c("AUTH PLAIN\r\n"),
        s("334 \r\n"),
        c("bare\n"),
        s("500 5.5.2 Error: bare <LF> received\r\n"),
        c("NOOP\r\n"),
        s(OK),
    ];
    let o = check(&auth_config(), &steps);
    assert_eq!(auth_responses(&o), vec![at_bound.into_bytes()]);
    assert_eq!(auth_starts(&o).len(), 3);
    assert!(!o.closed);
}

#[test]
fn require_auth_refuses_mail_until_authenticated() {
    let cfg = ServerConfig {
        require_auth: true,
        ..auth_config()
    };
    let steps = vec![
        s(GREETING),
        c("EHLO client.example\r\n"),
        s(EHLO_AUTH_REPLY),
        c("MAIL FROM:<a@example.org>\r\n"),
        s("530 5.7.0 Authentication required\r\n"),
        c(format!("AUTH PLAIN {PLAIN_USER}\r\n")),
        s(AUTH_OK),
        c("MAIL FROM:<a@example.org>\r\n"),
        s(MAIL_OK),
    ];
    let o = check(&cfg, &steps);
    assert_eq!(o.count(|e| matches!(e, Event::CheckMail { .. })), 1);
}

#[test]
fn repeated_auth_failures_reach_the_error_limit() {
    let cfg = ServerConfig {
        error_limit: 3,
        ..auth_config()
    };
    let steps = vec![
        s(GREETING),
        c("EHLO client.example\r\n"),
        s(EHLO_AUTH_REPLY),
        c("AUTH PLAIN eA==\r\nAUTH PLAIN eA==\r\nAUTH PLAIN eA==\r\nAUTH PLAIN eA==\r\n"),
        s([AUTH_BAD, AUTH_BAD, AUTH_BAD].concat()),
        s("421 4.7.0 mx.test Error: too many errors\r\n"),
    ];
    let o = check(&cfg, &steps);
    assert!(o.closed);
    assert_eq!(auth_starts(&o).len(), 3);
    assert!(
        o.events
            .contains(&Event::Closing(CloseReason::TooManyErrors))
    );
}

#[test]
fn pipelined_mail_waits_for_the_auth_outcome() {
    let cfg = ServerConfig {
        require_auth: true,
        ..auth_config()
    };
    let good = vec![
        s(GREETING),
        c("EHLO client.example\r\n"),
        s(EHLO_AUTH_REPLY),
        c(format!(
            "AUTH PLAIN {PLAIN_USER}\r\nMAIL FROM:<a@example.org> AUTH=a@example.org\r\n"
        )),
        s([AUTH_OK, MAIL_OK].concat()),
    ];
    let o = check(&cfg, &good);
    let order: Vec<_> = o
        .events
        .iter()
        .filter(|e| matches!(e, Event::AuthStart { .. } | Event::CheckMail { .. }))
        .collect();
    assert!(
        matches!(order[..], [Event::AuthStart { .. }, Event::CheckMail { params, .. }]
        if params.auth.as_deref() == Some("a@example.org"))
    );
    let bad = vec![
        s(GREETING),
        c("EHLO client.example\r\n"),
        s(EHLO_AUTH_REPLY),
        c("AUTH PLAIN eA==\r\nMAIL FROM:<a@example.org>\r\n"),
        s(AUTH_BAD),
        s("530 5.7.0 Authentication required\r\n"),
    ];
    let o = check(&cfg, &bad);
    assert_eq!(o.count(|e| matches!(e, Event::CheckMail { .. })), 0);
    // Without require_auth the AUTH= of a client that failed is recorded as `<>`.
    let bad = vec![
        s(GREETING),
        c("EHLO client.example\r\n"),
        s(EHLO_AUTH_REPLY),
        c("AUTH PLAIN eA==\r\nMAIL FROM:<a@example.org> AUTH=a@example.org\r\n"),
        s([AUTH_BAD, MAIL_OK].concat()),
    ];
    let o = check(&auth_config(), &bad);
    let auth = o.events.iter().find_map(|e| match e {
        Event::CheckMail { params, .. } => Some(params.auth.clone()),
        _ => None,
    });
    assert_eq!(auth, Some(Some(String::new())));
}

#[test]
fn auth_exchange_times_out_like_a_command() {
    let steps = vec![
        s(GREETING),
        c("EHLO client.example\r\n"),
        s(EHLO_AUTH_REPLY),
        c("AUTH LOGIN\r\n"),
        s("334 VXNlcm5hbWU6\r\n"),
        secs(299),
        secs(1),
        s("421 4.4.2 mx.test Error: timeout exceeded\r\n"),
    ];
    let o = check(&auth_config(), &steps);
    assert!(o.closed);
    assert!(o.events.contains(&Event::Closing(CloseReason::Timeout)));
}

#[test]
fn auth_answers_out_of_order_are_ignored() {
    let now = Instant::now();
    let mut session = Session::new(Rc::new(auth_config()), now);
    session.auth_challenge(b"x", now);
    session.auth_success("user".into(), None, now);
    session.auth_failure(Reply::new(535, "5.7.8", "no"), now);
    assert_eq!(session.poll_transmit(), Some(GREETING.to_vec()));
    assert!(!session.is_authenticated());
    assert!(session.wants_input());
}
