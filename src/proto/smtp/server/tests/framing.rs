//! Tests of reading command lines over time: pipelined commands answered in order, input
//! held while the layer answers, and every timeout and deadline (silence, slow lines and
//! content, the session limit, stress). No test reads the clock: time passes in steps.

use super::*;

#[test]
fn pipelined_commands_answered_in_order() {
    let steps = vec![
        s(GREETING),
        c(
            "EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n\
           RCPT TO:<nobody@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n",
        ),
        s([
            EHLO_REPLY,
            MAIL_OK,
            RCPT_OK,
            b"550 5.1.1 No such user\r\n",
            RCPT_OK,
            GO_AHEAD,
        ]
        .concat()),
        c("hi\r\n.\r\nNOOP\r\n"),
        s([QUEUED, OK].concat()),
    ];
    let o = check(&config(), &steps);
    let Some(Event::MessageEnd(t)) = o.events.iter().find(|e| matches!(e, Event::MessageEnd(_)))
    else {
        panic!("no MessageEnd")
    };
    let rcpts: Vec<&str> = t.rcpts.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(rcpts, ["b@example.com", "c@example.com"]);
    assert!(o.events.contains(&Event::Rejected {
        command: "RCPT".into(),
        to: Some("nobody@example.com".into()),
        reply: Reply::new(550, "5.1.1", "No such user")
    }));
}

#[test]
fn replies_batch_into_one_transmit_while_the_layer_answers() {
    let now = Instant::now();
    let mut session = Session::new(Rc::new(config()), now);
    assert_eq!(session.poll_transmit().unwrap(), GREETING);
    session.handle_input(
        b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n",
        now,
    );
    assert!(!session.wants_input());
    let mut checks = 0;
    while let Some(e) = session.poll_event() {
        if matches!(e, Event::CheckMail { .. } | Event::CheckRcpt { .. }) {
            assert_eq!(session.poll_timeout(), None, "no timeout while waiting");
            checks += 1;
            session.answer(Verdict::Accept, now);
        }
    }
    assert_eq!(checks, 3);
    let all = [EHLO_REPLY, MAIL_OK, RCPT_OK, RCPT_OK, GO_AHEAD].concat();
    assert_eq!(session.poll_transmit().unwrap(), all);
    assert!(session.poll_transmit().is_none());
    assert!(session.wants_input());
    assert!(session.wants_input());
}

#[test]
fn session_time_limit() {
    let mut cfg = config();
    cfg.max_session_time = Duration::from_secs(500);
    let o = check(
        &cfg,
        &[
            c("NOOP\r\n"),
            secs(200),
            c("NOOP\r\n"),
            secs(200),
            c("NOOP\r\n"),
            secs(100),
        ],
    );
    assert!(o.closed);
    assert!(has(
        &o.out,
        b"421 4.4.2 mx.test Error: timeout exceeded\r\n"
    ));
    assert_eq!(
        o.events.last(),
        Some(&Event::Closing(CloseReason::SessionLimit))
    );
}

fn deadlines() -> ServerConfig {
    let mut cfg = config();
    cfg.command_deadline = Duration::from_secs(30);
    cfg.data_deadline = Duration::from_secs(60);
    cfg.min_data_rate = 500;
    cfg
}

fn too_slow(o: &Outcome) -> bool {
    o.closed
        && has(&o.out, b"421 4.4.2 mx.test Error: timeout exceeded\r\n")
        && o.events.last() == Some(&Event::Closing(CloseReason::TooSlow))
}

#[test]
fn a_dribbled_command_line_is_cut_at_its_deadline() {
    // One octet every 10 s: never quiet for the 300 s idle timeout, yet the line is not
    // complete 30 s after its first octet.
    let mut steps = vec![];
    for b in "NOOP NOOP NOOP NOOP\r\n".chars().take(4) {
        steps.push(c(b.to_string()));
        steps.push(secs(10));
    }
    let o = check(&deadlines(), &steps);
    assert!(too_slow(&o), "{:?}", String::from_utf8_lossy(&o.out));
    // The same octets in time are served.
    let o = check(&deadlines(), &[c("NO"), secs(29), c("OP\r\n"), secs(1)]);
    assert!(!o.closed);
    assert!(has(&o.out, b"250 2.0.0 Ok\r\n"));
}

#[test]
fn slow_but_complete_lines_each_get_their_own_deadline() {
    let o = check(
        &deadlines(),
        &[
            c("NOOP\r\n"),
            secs(250),
            c("NO"),
            secs(25),
            c("OP\r\n"),
            secs(250),
            c("NOOP\r\n"),
        ],
    );
    assert!(!o.closed);
    assert_eq!(
        String::from_utf8_lossy(&o.out)
            .matches("250 2.0.0 Ok")
            .count(),
        3
    );
}

fn up_to_data() -> Vec<Step> {
    vec![c(
        "EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
    )]
}

#[test]
fn dribbled_content_is_cut_at_the_data_deadline() {
    let mut steps = up_to_data();
    for _ in 0..5 {
        steps.push(c("x"));
        steps.push(secs(15));
    }
    let o = check(&deadlines(), &steps);
    assert!(too_slow(&o), "{:?}", String::from_utf8_lossy(&o.out));
    assert!(!has(&o.out, QUEUED));
}

#[test]
fn content_at_the_minimum_rate_earns_its_time() {
    // 60 s deadline, 10 octets/s: 4 pieces of 200 octets 20 s apart take 80 s in all,
    // and earn 80 s more.
    let mut cfg = deadlines();
    cfg.min_data_rate = 10;
    let line = format!("{}\r\n", "y".repeat(98));
    let mut steps = up_to_data();
    for _ in 0..4 {
        steps.push(secs(20));
        steps.push(c(line.repeat(2)));
    }
    steps.push(c(".\r\n"));
    let o = check(&cfg, &steps);
    assert!(!o.closed, "{:?}", String::from_utf8_lossy(&o.out));
    assert!(has(&o.out, QUEUED));
    // A quarter of that is too slow: 50 octets per 20 s earn 5 s each.
    let short = format!("{}\r\n", "y".repeat(48));
    let mut steps = up_to_data();
    for _ in 0..6 {
        steps.push(secs(20));
        steps.push(c(short.clone()));
    }
    assert!(too_slow(&check(&cfg, &steps)));
}

#[test]
fn a_dribbled_bdat_chunk_is_cut_at_the_data_deadline() {
    let mut steps = vec![c(
        "EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nBDAT 100 LAST\r\n",
    )];
    for _ in 0..5 {
        steps.push(c("z"));
        steps.push(secs(15));
    }
    assert!(too_slow(&check(&deadlines(), &steps)));
}

#[test]
fn the_defaults_end_a_slowloris_within_two_minutes() {
    let cfg = ServerConfig::from_service("mx.test", &crate::proto::config::Service::default());
    // One octet every 5 s, in a command line and in message content.
    for prefix in [vec![], up_to_data()] {
        let t0 = Instant::now();
        let mut session = Session::new(Rc::new(cfg.clone()), t0);
        let (mut out, mut events) = (Vec::new(), Vec::new());
        for step in &prefix {
            if let Step::C(bytes) = step {
                session.handle_input(bytes, t0);
                drain(&mut session, t0, &mut out, &mut events);
            }
        }
        let mut now = t0;
        let mut closed_at = None;
        for _ in 0..60 {
            session.handle_input(b"x", now);
            drain(&mut session, now, &mut out, &mut events);
            now += Duration::from_secs(5);
            if session.poll_timeout().is_some_and(|t| t <= now) {
                session.handle_timeout(now);
            }
            if session.is_closed() {
                closed_at = Some(now.duration_since(t0));
                break;
            }
        }
        let closed_at = closed_at.expect("still open after five minutes");
        assert!(closed_at <= Duration::from_secs(120), "{closed_at:?}");
    }
}

#[test]
fn stress_shortens_every_limit_from_the_same_start() {
    let t0 = Instant::now();
    let mut session = Session::new(Rc::new(deadlines()), t0);
    let _ = session.poll_transmit();
    assert_eq!(session.poll_timeout(), Some(t0 + Duration::from_secs(300)));
    session.set_stress(true);
    assert_eq!(session.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    session.handle_timeout(t0 + Duration::from_secs(10));
    assert!(session.is_closed());
    let out = session.poll_transmit().unwrap();
    assert!(has(&out, b"421 4.4.2 mx.test Error: timeout exceeded\r\n"));
    // Stress over: the normal limits again.
    let mut session = Session::new(Rc::new(deadlines()), t0);
    session.handle_input(b"NO", t0);
    session.set_stress(true);
    assert_eq!(session.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    session.set_stress(false);
    assert_eq!(session.poll_timeout(), Some(t0 + Duration::from_secs(30)));
}

#[test]
fn overrun_while_waiting_is_bounded() {
    let now = Instant::now();
    let mut session = Session::new(Rc::new(config()), now);
    session.handle_input(b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\n", now);
    assert!(!session.wants_input());
    let junk = vec![b'x'; MAX_PENDING_INPUT / 2 + 1];
    session.handle_input(&junk, now);
    session.handle_input(&junk, now);
    assert!(session.input.len() <= MAX_PENDING_INPUT);
    session.answer(Verdict::Accept, now);
    let out = session.poll_transmit().unwrap();
    assert!(in_order(
        &out,
        &[
            MAIL_OK,
            b"421 4.7.0 mx.test Error: too much pipelined input\r\n"
        ]
    ));
    assert!(session.is_closed());
}

#[test]
fn timeouts_report_their_reason() {
    let o = check(
        &config(),
        &in_data(b"x")
            .into_iter()
            .chain([secs(180)])
            .collect::<Vec<_>>(),
    );
    assert!(
        o.events
            .ends_with(&[Event::MessageAbort, Event::Closing(CloseReason::Timeout)])
    );
    let o = check(&config(), &[secs(300)]);
    assert_eq!(o.events.last(), Some(&Event::Closing(CloseReason::Timeout)));
    let mut cfg = config();
    cfg.greet_delay = Duration::from_secs(1);
    let o = check(&cfg, &[c("x")]);
    assert_eq!(
        o.events.last(),
        Some(&Event::Closing(CloseReason::EarlyTalker))
    );
}
