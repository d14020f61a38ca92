//! Tests of the mail transaction: MAIL, RCPT, DATA, BDAT and RSET, their parameters
//! (SIZE, BODY, DSN, SMTPUTF8), the message content handed to the layer, and the
//! policy's answers. Every begun message ends in `MessageEnd` or `MessageAbort`.

use super::*;

#[test]
fn full_transaction_undoes_dot_stuffing() {
    let steps = with(
        opening(),
        vec![
            c("DATA\r\n"),
            s(GO_AHEAD),
            c("Subject: t\r\n\r\n..line\r\n.x\r\n...\r\nend\r\n.\r\n"),
            s(QUEUED),
            c("QUIT\r\n"),
            s("221 2.0.0 Bye\r\n"),
        ],
    );
    let o = check(&config(), &steps);
    assert_eq!(
        o.committed(),
        vec![b"Subject: t\r\n\r\n.line\r\nx\r\n..\r\nend\r\n".to_vec()]
    );
    let Some(Event::MessageEnd(t)) = o.events.iter().find(|e| matches!(e, Event::MessageEnd(_)))
    else {
        panic!("no MessageEnd")
    };
    assert_eq!(t.helo, "client.example");
    assert!(t.esmtp);
    assert_eq!(t.from, "a@example.org");
    assert_eq!(
        t.rcpts,
        vec![("b@example.com".to_string(), RcptParams::default())]
    );
    assert_eq!(t.size, 33);
    assert!(o.closed);
    assert_eq!(o.events.last(), Some(&Event::Closing(CloseReason::Quit)));
}

#[test]
fn empty_message_and_two_messages_in_a_session() {
    let steps = with(
        opening(),
        vec![
            c("DATA\r\n.\r\n"),
            s([GO_AHEAD, QUEUED].concat()),
            c("MAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\nDATA\r\nx\r\n.\r\n"),
            s([MAIL_OK, RCPT_OK, GO_AHEAD, QUEUED].concat()),
        ],
    );
    let o = check(&config(), &steps);
    assert_eq!(o.committed(), vec![Vec::new(), b"x\r\n".to_vec()]);
    assert!(o.events.contains(&Event::CheckMail {
        from: String::new(),
        params: MailParams::default()
    }));
    assert!(o.events.contains(&Event::CheckRcpt {
        to: Recipient::Postmaster("Postmaster".into()),
        had_source_route: false,
        params: RcptParams::default()
    }));
}

#[test]
fn eight_bit_body() {
    let body = b"Subject: caf\xc3\xa9\r\n\r\n\xe2\x82\xac \xff\xfe\r\n";
    let steps = vec![
        s(GREETING),
        c(
            "EHLO c.example\r\nMAIL FROM:<a@example.org> BODY=8BITMIME\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
        ),
        s([EHLO_REPLY, MAIL_OK, RCPT_OK, GO_AHEAD].concat()),
        c([&body[..], b".\r\n"].concat()),
        s(QUEUED),
    ];
    let o = check(&config(), &steps);
    assert_eq!(o.committed(), vec![body.to_vec()]);
    let want = MailParams {
        body: Some(Body::EightBitMime),
        ..MailParams::default()
    };
    assert!(o.events.contains(&Event::CheckMail {
        from: "a@example.org".into(),
        params: want
    }));
}

#[test]
fn bdat_chunks_with_crlf_across_the_boundary() {
    let steps = with(
        opening(),
        vec![
            c("BDAT 4\r\nabc\r"),
            s("250 2.0.0 4 octets received\r\n"),
            c("BDAT 7 LAST\r\n\n.\r\nd\r\n"),
            s(QUEUED),
            c("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nBDAT 0 LAST\r\n"),
            s([MAIL_OK, RCPT_OK, QUEUED].concat()),
        ],
    );
    let o = check(&config(), &steps);
    assert_eq!(
        o.committed(),
        vec![b"abc\r\n.\r\nd\r\n".to_vec(), Vec::new()]
    );
    assert_eq!(o.count(|e| matches!(e, Event::MessageBegin)), 2);
}

#[test]
fn bdat_refusals_consume_the_chunk() {
    let mut cfg = config();
    cfg.ehlo_keywords = EhloKeywords::ALL.without(EhloKeywords::CHUNKING);
    let o = check(&cfg, &[c("EHLO c.example\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n")]);
    assert!(in_order(
        &o.out,
        &[b"502 5.5.1 Error: command not implemented\r\n", OK]
    ));
    assert!(!o.closed);
    // No recipients: the chunk is eaten, then 503.
    let o = check(
        &config(),
        &[c(
            "EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n",
        )],
    );
    assert!(in_order(
        &o.out,
        &[MAIL_OK, b"503 5.5.1 Error: need RCPT command\r\n", OK]
    ));
    assert_eq!(o.count(|e| matches!(e, Event::MessageBegin)), 0);
    // All recipients refused.
    let o = check(
        &config(),
        &[c(
            "EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<nobody@b.example>\r\nDATA\r\n",
        )],
    );
    assert!(has(&o.out, b"554 5.5.1 Error: no valid recipients\r\n"));
}

#[test]
fn bdat_failed_chunk_kills_the_transaction() {
    let steps = with(
        opening(),
        vec![
            c("BDAT 4\r\na\nbc"),
            s("550 5.5.2 Message refused: bare <CR> or <LF> in data\r\n"),
            c("BDAT 3 LAST\r\nxyz"),
            s("503 5.5.1 Error: need MAIL command\r\n"),
            c("DATA\r\n"),
            s("503 5.5.1 Error: need MAIL command\r\n"),
            c("RSET\r\n"),
            s(OK),
        ],
    );
    let o = check(&config(), &steps);
    assert_eq!(o.message_ends(), 0);
    assert_eq!(o.count(|e| matches!(e, Event::MessageAbort)), 1);
    // DATA in the middle of a BDAT transaction is refused; RSET aborts it.
    let steps = with(
        opening(),
        vec![
            c("BDAT 1\r\nx"),
            s("250 2.0.0 1 octets received\r\n"),
            c("DATA\r\n"),
            s("503 5.5.1 Error: BDAT transfer in progress\r\n"),
            c("RSET\r\n"),
            s(OK),
        ],
    );
    let o = check(&config(), &steps);
    assert_eq!(o.message_ends(), 0);
    assert_eq!(o.count(|e| matches!(e, Event::MessageAbort)), 1);
}

#[test]
fn helo_allows_no_esmtp_parameters() {
    let steps = vec![
        s(GREETING),
        c("HELO c.example\r\n"),
        s("250 mx.test\r\n"),
        c("MAIL FROM:<a@example.org> SIZE=10\r\n"),
        s("555 5.5.4 Unsupported option: SIZE\r\n"),
        c("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com> NOTIFY=NEVER\r\nBDAT 1 LAST\r\nx"),
        s([
            MAIL_OK,
            b"555 5.5.4 Unsupported option: NOTIFY\r\n" as &[u8],
            b"502 5.5.1 Error: command not implemented\r\n",
        ]
        .concat()),
    ];
    let o = check(&config(), &steps);
    assert_eq!(
        o.events[0],
        Event::Helo {
            name: "c.example".into(),
            esmtp: false
        }
    );
}

#[test]
fn dsn_parameters_are_parsed() {
    let steps = vec![
        c(
            "EHLO c.example\r\nMAIL FROM:<a@example.org> RET=HDRS ENVID=QQ+2B1 SIZE=100\r\n\
           RCPT TO:<b@example.com> NOTIFY=FAILURE,DELAY ORCPT=rfc822;b+40example.com\r\n\
           RCPT TO:<c@example.com> NOTIFY=BOGUS\r\nRCPT TO:<d@example.com> FOO=1\r\n",
        ),
        s([GREETING, EHLO_REPLY, MAIL_OK, RCPT_OK].concat()),
        s(b"501 5.5.4 Bad parameter value: NOTIFY\r\n555 5.5.4 Unsupported option: FOO\r\n"),
    ];
    let o = check(&config(), &steps);
    let mail = MailParams {
        size: Some(100),
        ret: Some(Ret::Hdrs),
        envid: Some("QQ+2B1".into()),
        ..MailParams::default()
    };
    assert!(o.events.contains(&Event::CheckMail {
        from: "a@example.org".into(),
        params: mail
    }));
    let rcpt = RcptParams {
        notify: Some(Notify {
            never: false,
            success: false,
            failure: true,
            delay: true,
        }),
        orcpt: Some("rfc822;b+40example.com".into()),
    };
    assert!(o.events.contains(&Event::CheckRcpt {
        to: Recipient::parse("b@example.com").unwrap(),
        had_source_route: false,
        params: rcpt
    }));
    let mut cfg = config();
    cfg.ehlo_keywords = EhloKeywords::ALL.without(EhloKeywords::DSN);
    let o = check(
        &cfg,
        &[c(
            "EHLO c.example\r\nMAIL FROM:<a@example.org> RET=FULL\r\n",
        )],
    );
    assert!(has(&o.out, b"555 5.5.4 Unsupported option: RET\r\n"));
}

#[test]
fn smtputf8_addresses() {
    let steps = vec![
        c(
            "EHLO c.example\r\nMAIL FROM:<j\u{f6}rg@b\u{fc}cher.example> SMTPUTF8\r\nRCPT TO:<\u{4f60}\u{597d}@example.com>\r\nDATA\r\n",
        ),
        s([GREETING, EHLO_REPLY, MAIL_OK, RCPT_OK, GO_AHEAD].concat()),
        c("x\r\n.\r\n"),
        s(QUEUED),
        c(
            "MAIL FROM:<j\u{f6}rg@example.org>\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<\u{e9}@example.com>\r\n",
        ),
        s([
            b"553 5.6.7 Error: non-ASCII address requires SMTPUTF8\r\n" as &[u8],
            MAIL_OK,
            b"553 5.6.7 Error: non-ASCII address requires SMTPUTF8\r\n",
        ]
        .concat()),
    ];
    let o = check(&config(), &steps);
    assert_eq!(o.message_ends(), 1);
    let params = MailParams {
        smtputf8: true,
        ..MailParams::default()
    };
    assert!(o.events.contains(&Event::CheckMail {
        from: "j\u{f6}rg@b\u{fc}cher.example".into(),
        params
    }));
    let mut cfg = config();
    cfg.ehlo_keywords = EhloKeywords::ALL.without(EhloKeywords::SMTPUTF8);
    let o = check(
        &cfg,
        &[c(
            "EHLO c.example\r\nMAIL FROM:<a@example.org> SMTPUTF8\r\n",
        )],
    );
    assert!(has(&o.out, b"555 5.5.4 Unsupported option: SMTPUTF8\r\n"));
}

fn hops(n: usize) -> Vec<u8> {
    let mut m = "Received: from a by b;\r\n\tThu, 1 Jan 2026 00:00:00 +0000\r\n".repeat(n);
    m.push_str("Subject: loop\r\n\r\nReceived: in the body does not count\r\n.\r\n");
    m.into_bytes()
}

#[test]
fn loop_detection_at_51_received_fields_not_50() {
    let o = check(
        &config(),
        &with(
            opening(),
            vec![c("DATA\r\n"), s(GO_AHEAD), c(hops(50)), s(QUEUED)],
        ),
    );
    assert_eq!(o.message_ends(), 1);
    let loop51 = vec![
        c("DATA\r\n"),
        s(GO_AHEAD),
        c(hops(51)),
        s("554 5.4.6 Too many hops: mail loop detected\r\n"),
    ];
    let o = check(&config(), &with(opening(), loop51));
    assert_eq!(o.message_ends(), 0);
    assert!(o.events.contains(&Event::MessageAbort));
    assert!(!o.closed);
}

#[test]
fn max_messages_per_session() {
    let mut cfg = config();
    cfg.max_messages = 1;
    let steps = with(
        opening(),
        vec![
            c("DATA\r\nx\r\n.\r\nMAIL FROM:<a@example.org>\r\n"),
            s([
                GO_AHEAD,
                QUEUED,
                b"452 4.5.3 Error: too many messages in this session\r\n",
            ]
            .concat()),
        ],
    );
    let o = check(&cfg, &steps);
    assert_eq!(o.message_ends(), 1);
    assert!(!o.closed);
}

#[test]
fn policy_refusals_and_failed_commit() {
    let steps = vec![
        c(
            "EHLO c.example\r\nMAIL FROM:<spammer@example.org>\r\nMAIL FROM:<tempfail@example.org>\r\n\
           RCPT TO:<b@example.com>\r\nDATA\r\nx\r\n.\r\n",
        ),
        s([
            GREETING,
            EHLO_REPLY,
            b"550 5.7.1 Sender refused\r\n",
            MAIL_OK,
            RCPT_OK,
            GO_AHEAD,
        ]
        .concat()),
        s(b"451 4.3.0 Queue busy\r\n"),
        c("RCPT TO:<b@example.com>\r\n"),
        s(b"503 5.5.1 Error: need MAIL command\r\n"),
    ];
    let o = check(&config(), &steps);
    assert_eq!(o.message_ends(), 1);
    let rejected: Vec<&str> = o
        .events
        .iter()
        .filter_map(|e| {
            if let Event::Rejected { command, .. } = e {
                Some(command.as_str())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(rejected, ["MAIL", "DATA", "RCPT"]);
}

#[test]
fn source_route_is_dropped_but_reported() {
    let now = Instant::now();
    let mut session = Session::new(Rc::new(config()), now);
    session.handle_input(
        b"EHLO c.example\r\nMAIL FROM:<@r1.example,@r2.example:a@example.org>\r\n",
        now,
    );
    let events: Vec<Event> = std::iter::from_fn(|| session.poll_event()).collect();
    assert!(events.contains(&Event::CheckMail {
        from: "a@example.org".into(),
        params: MailParams::default()
    }));
    session.answer(Verdict::Accept, now);
    let to = Recipient::parse("b@example.com").unwrap();
    for (line, had_source_route) in [
        ("RCPT TO:<@r1.example:b@example.com>\r\n", true),
        ("RCPT TO:<b@example.com>\r\n", false),
    ] {
        session.handle_input(line.as_bytes(), now);
        let events: Vec<Event> = std::iter::from_fn(|| session.poll_event()).collect();
        assert_eq!(
            events,
            [Event::CheckRcpt {
                to: to.clone(),
                had_source_route,
                params: RcptParams::default()
            }]
        );
        session.answer(Verdict::Accept, now);
    }
}

#[test]
fn an_accepted_recipient_is_recorded_as_the_layer_routes_it() {
    let now = Instant::now();
    let mut session = Session::new(Rc::new(config()), now);
    session.handle_input(b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\n", now);
    while session.poll_event().is_some() {}
    session.answer(Verdict::Accept, now);
    session.handle_input(b"RCPT TO:<postmaster@[192.0.2.25]>\r\n", now);
    while session.poll_event().is_some() {}
    session.accept_rcpt("postmaster@gw.example.com".into(), now);
    session.handle_input(b"RCPT TO:<b@example.com>\r\n", now);
    while session.poll_event().is_some() {}
    session.answer(Verdict::Accept, now);
    session.handle_input(b"DATA\r\nx\r\n.\r\n", now);
    let tx = std::iter::from_fn(|| session.poll_event())
        .find_map(|e| match e {
            Event::MessageEnd(tx) => Some(tx),
            _ => None,
        })
        .expect("the message ends");
    let rcpts: Vec<&str> = tx.rcpts.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(rcpts, ["postmaster@gw.example.com", "b@example.com"]);
    let mut replies = Vec::new();
    while let Some(b) = session.poll_transmit() {
        replies.extend_from_slice(&b);
    }
    let replies = String::from_utf8(replies).unwrap();
    assert_eq!(replies.matches("250 2.1.5 Ok\r\n").count(), 2, "{replies}");

    // The same recipient twice (written two ways): 250 both times, delivered once.
    session.commit_done(Ok("ID1".into()), now);
    session.handle_input(b"MAIL FROM:<a@example.org>\r\n", now);
    while session.poll_event().is_some() {}
    session.answer(Verdict::Accept, now);
    for _ in 0..2 {
        session.handle_input(b"RCPT TO:<postmaster>\r\n", now);
        while session.poll_event().is_some() {}
        session.accept_rcpt("postmaster@gw.example.com".into(), now);
    }
    session.handle_input(b"DATA\r\nx\r\n.\r\n", now);
    let tx = std::iter::from_fn(|| session.poll_event())
        .find_map(|e| match e {
            Event::MessageEnd(tx) => Some(tx),
            _ => None,
        })
        .expect("the message ends");
    assert_eq!(tx.rcpts.len(), 1);
}
