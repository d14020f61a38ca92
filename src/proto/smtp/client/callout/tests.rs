//! Transcript tests of the callout core: verifies against scripted servers, each run
//! whole, a byte at a time and split at every index.

use super::*;
use crate::proto::smtp::client_reply::ReplyError;

fn config() -> CalloutConfig {
    CalloutConfig {
        helo_name: "gw.example.net".into(),
        reply_timeout: Duration::from_secs(10),
    }
}

/// What one run produced: all bytes written and all events, in order.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    written: Vec<u8>,
    events: Vec<CalloutEvent>,
}

fn drain(client: &mut CalloutClient, run: &mut Run) {
    while let Some(out) = client.poll_transmit() {
        run.written.extend_from_slice(&out);
    }
    while let Some(event) = client.poll_event() {
        run.events.push(event);
    }
}

/// Asks `verifies` up front, then feeds `server` cut at `cuts`, then ends with `end`.
fn run_cut(
    verifies: &[&str],
    server: &[u8],
    cuts: &[usize],
    end: impl Fn(&mut CalloutClient, Instant),
) -> Run {
    let now = Instant::now();
    let mut client = CalloutClient::new(config(), now);
    let mut run = Run {
        written: Vec::new(),
        events: Vec::new(),
    };
    for rcpt in verifies {
        client.verify(rcpt, now);
    }
    drain(&mut client, &mut run);
    let mut start = 0;
    for end in cuts.iter().copied().chain([server.len()]) {
        client.handle_input(&server[start..end], now);
        start = end;
        drain(&mut client, &mut run);
    }
    end(&mut client, now);
    drain(&mut client, &mut run);
    run
}

/// Runs the transcript whole, a byte at a time and split at every index; all agree.
fn run_every_way(
    verifies: &[&str],
    server: &[u8],
    end: impl Fn(&mut CalloutClient, Instant),
) -> Run {
    let whole = run_cut(verifies, server, &[], &end);
    let bytes: Vec<usize> = (1..server.len()).collect();
    assert_eq!(
        run_cut(verifies, server, &bytes, &end),
        whole,
        "byte at a time"
    );
    for i in 0..=server.len() {
        assert_eq!(run_cut(verifies, server, &[i], &end), whole, "split at {i}");
    }
    whole
}

fn nothing(_: &mut CalloutClient, _: Instant) {}

fn verified(rcpt: &str, outcome: CalloutOutcome) -> CalloutEvent {
    CalloutEvent::Verified {
        rcpt: rcpt.into(),
        outcome,
    }
}

const PIPELINED_EHLO: &[u8] = b"220 mx ESMTP\r\n250-mx\r\n250-SIZE 1000\r\n250 PIPELINING\r\n";

#[test]
fn pipelined_verifies_reuse_one_connection() {
    let mut server = PIPELINED_EHLO.to_vec();
    server.extend_from_slice(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n");
    server.extend_from_slice(
        b"250 2.1.0 Ok\r\n550-5.1.1 <nobody@example.com>:\r\n550 5.1.1 User unknown\r\n250 2.0.0 Ok\r\n",
    );
    server.extend_from_slice(b"250 2.1.0 Ok\r\n450 4.2.0 Try later\r\n250 2.0.0 Ok\r\n");
    let run = run_every_way(
        &["bob@example.com", "nobody@example.com", "busy@example.com"],
        &server,
        |c, now| {
            assert!(c.is_idle());
            c.quit(now);
            c.handle_input(b"221 2.0.0 Bye\r\n", now);
        },
    );
    assert_eq!(
        String::from_utf8(run.written).unwrap(),
        "EHLO gw.example.net\r\n\
         MAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\nRSET\r\n\
         MAIL FROM:<>\r\nRCPT TO:<nobody@example.com>\r\nRSET\r\n\
         MAIL FROM:<>\r\nRCPT TO:<busy@example.com>\r\nRSET\r\n\
         QUIT\r\n"
    );
    assert_eq!(
        run.events,
        vec![
            CalloutEvent::Ready { pipelining: true },
            verified("bob@example.com", CalloutOutcome::Exists),
            verified(
                "nobody@example.com",
                CalloutOutcome::Refused(Reply {
                    code: 550,
                    enhanced: Some(crate::proto::smtp::reply::Enhanced::new(5, 1, 1)),
                    lines: vec!["<nobody@example.com>:".into(), "User unknown".into()],
                })
            ),
            verified(
                "busy@example.com",
                CalloutOutcome::Unsure(Reply::new(450, "4.2.0", "Try later"))
            ),
            CalloutEvent::Closed(None),
        ]
    );
}

#[test]
fn pipelined_batch_is_one_write() {
    let now = Instant::now();
    let mut client = CalloutClient::new(config(), now);
    client.handle_input(PIPELINED_EHLO, now);
    let _ehlo = client.poll_transmit();
    client.verify("a@example.com", now);
    assert_eq!(
        client.poll_transmit().unwrap(),
        b"MAIL FROM:<>\r\nRCPT TO:<a@example.com>\r\nRSET\r\n"
    );
    assert_eq!(client.poll_transmit(), None);
}

#[test]
fn lock_step_without_pipelining_and_mail_refused_skips_rcpt() {
    let server = b"220 mx\r\n250 mx\r\n\
        250 Ok\r\n250 Ok\r\n250 Ok\r\n\
        550 5.7.1 Null sender refused\r\n250 Ok\r\n";
    let run = run_every_way(&["a@example.com", "b@example.com"], server, nothing);
    assert_eq!(
        String::from_utf8(run.written).unwrap(),
        "EHLO gw.example.net\r\n\
         MAIL FROM:<>\r\nRCPT TO:<a@example.com>\r\nRSET\r\n\
         MAIL FROM:<>\r\nRSET\r\n"
    );
    assert_eq!(
        run.events,
        vec![
            CalloutEvent::Ready { pipelining: false },
            verified("a@example.com", CalloutOutcome::Exists),
            verified(
                "b@example.com",
                CalloutOutcome::Unsure(Reply::new(550, "5.7.1", "Null sender refused"))
            ),
        ]
    );
}

#[test]
fn lock_step_waits_for_each_reply() {
    let now = Instant::now();
    let mut client = CalloutClient::new(config(), now);
    client.handle_input(b"220 mx\r\n250 mx\r\n", now);
    let _ehlo = client.poll_transmit();
    client.verify("a@example.com", now);
    assert_eq!(client.poll_transmit().unwrap(), b"MAIL FROM:<>\r\n");
    assert_eq!(client.poll_transmit(), None);
    client.handle_input(b"250 Ok\r\n", now);
    assert_eq!(
        client.poll_transmit().unwrap(),
        b"RCPT TO:<a@example.com>\r\n"
    );
    assert_eq!(client.poll_transmit(), None);
}

#[test]
fn pipelined_mail_refused_ignores_rcpt_reply() {
    let mut server = PIPELINED_EHLO.to_vec();
    server.extend_from_slice(b"451 4.3.0 Busy\r\n503 5.5.1 Need MAIL\r\n250 Ok\r\n");
    let run = run_every_way(&["a@example.com"], &server, nothing);
    assert_eq!(
        run.events[1..],
        [verified(
            "a@example.com",
            CalloutOutcome::Unsure(Reply::new(451, "4.3.0", "Busy"))
        )]
    );
}

#[test]
fn helo_fallback_on_5xx() {
    let server = b"220 mx\r\n502 5.5.2 What\r\n250 mx\r\n250 Ok\r\n250 Ok\r\n250 Ok\r\n";
    let run = run_every_way(&["a@example.com"], server, nothing);
    assert_eq!(
        String::from_utf8(run.written).unwrap(),
        "EHLO gw.example.net\r\nHELO gw.example.net\r\n\
         MAIL FROM:<>\r\nRCPT TO:<a@example.com>\r\nRSET\r\n"
    );
    assert_eq!(
        run.events,
        vec![
            CalloutEvent::Ready { pipelining: false },
            verified("a@example.com", CalloutOutcome::Exists),
        ]
    );
}

#[test]
fn greeting_refused_answers_pending_and_closes() {
    let run = run_every_way(&["a@example.com"], b"554 5.3.2 Go away\r\n", nothing);
    let reply = Reply::new(554, "5.3.2", "Go away");
    assert_eq!(run.written, b"QUIT\r\n");
    assert_eq!(
        run.events,
        vec![
            verified("a@example.com", CalloutOutcome::Unsure(reply.clone())),
            CalloutEvent::Closed(Some(reply)),
        ]
    );
}

#[test]
fn a_421_mid_verify_answers_unsure_and_closes() {
    let mut server = PIPELINED_EHLO.to_vec();
    server.extend_from_slice(b"421 4.3.2 Shutting down\r\n");
    let run = run_every_way(&["a@example.com", "b@example.com"], &server, nothing);
    let reply = Reply::new(421, "4.3.2", "Shutting down");
    assert_eq!(
        run.events[1..],
        [
            verified("a@example.com", CalloutOutcome::Unsure(reply.clone())),
            verified("b@example.com", CalloutOutcome::Unsure(reply.clone())),
            CalloutEvent::Closed(Some(reply)),
        ]
    );
}

#[test]
fn malformed_reply_closes() {
    let mut server = PIPELINED_EHLO.to_vec();
    server.extend_from_slice(b"250 Ok\r\nhello\r\n");
    let run = run_every_way(&["a@example.com"], &server, nothing);
    let reply = ReplyError::BadCode.reply();
    assert_eq!(
        run.events[1..],
        [
            verified("a@example.com", CalloutOutcome::Unsure(reply.clone())),
            CalloutEvent::Closed(Some(reply)),
        ]
    );
}

#[test]
fn unexpected_bytes_and_3xx_close() {
    let mut server = PIPELINED_EHLO.to_vec();
    server.extend_from_slice(b"250 Ok\r\n354 Go on\r\n");
    let run = run_every_way(&["a@example.com"], &server, nothing);
    assert!(matches!(
        run.events.last(),
        Some(CalloutEvent::Closed(Some(r))) if r.code == 451
    ));
    // Bytes while nothing is owed.
    let mut server = PIPELINED_EHLO.to_vec();
    server.extend_from_slice(b"250 Ok\r\n");
    let run = run_every_way(&[], &server, nothing);
    assert_eq!(
        run.events,
        vec![
            CalloutEvent::Ready { pipelining: true },
            CalloutEvent::Closed(Some(Failure::Unexpected.reply())),
        ]
    );
}

#[test]
fn rset_refused_closes_after_the_answer() {
    let mut server = PIPELINED_EHLO.to_vec();
    server.extend_from_slice(b"250 Ok\r\n250 Ok\r\n500 5.5.1 No\r\n");
    let run = run_every_way(&["a@example.com"], &server, nothing);
    assert_eq!(
        run.events[1..],
        [
            verified("a@example.com", CalloutOutcome::Exists),
            CalloutEvent::Closed(Some(Reply::new(500, "5.5.1", "No"))),
        ]
    );
}

#[test]
fn timeout_answers_unsure() {
    let now = Instant::now();
    let mut client = CalloutClient::new(config(), now);
    client.handle_input(PIPELINED_EHLO, now);
    client.verify("a@example.com", now);
    let deadline = client.poll_timeout().unwrap();
    assert_eq!(deadline, now + Duration::from_secs(10));
    client.handle_timeout(deadline - Duration::from_millis(1));
    assert!(!client.is_closed());
    client.handle_timeout(deadline);
    assert!(client.is_closed());
    let events: Vec<_> = std::iter::from_fn(|| client.poll_event()).collect();
    let reply = Reply::new(451, "4.4.2", "Timeout waiting for MAIL reply");
    assert_eq!(
        events[1..],
        [
            verified("a@example.com", CalloutOutcome::Unsure(reply.clone())),
            CalloutEvent::Closed(Some(reply)),
        ]
    );
    assert_eq!(client.poll_timeout(), None);
}

#[test]
fn idle_connection_has_no_deadline() {
    let run_now = Instant::now();
    let mut client = CalloutClient::new(config(), run_now);
    client.handle_input(PIPELINED_EHLO, run_now);
    assert!(client.is_idle());
    assert_eq!(client.poll_timeout(), None);
}

#[test]
fn eof_mid_verify_answers_unsure() {
    let mut server = PIPELINED_EHLO.to_vec();
    server.extend_from_slice(b"250 Ok\r\n");
    let run = run_every_way(&["a@example.com"], &server, |c, now| c.handle_eof(now));
    let reply = Reply::new(451, "4.4.2", "Connection lost while waiting for RCPT reply");
    assert_eq!(
        run.events[1..],
        [
            verified("a@example.com", CalloutOutcome::Unsure(reply.clone())),
            CalloutEvent::Closed(Some(reply)),
        ]
    );
}

#[test]
fn verify_after_close_and_bad_addresses_are_unsure_at_once() {
    let now = Instant::now();
    let mut client = CalloutClient::new(config(), now);
    client.verify("a@b\r\nDATA", now);
    client.verify(&"x".repeat(MAX_RCPT_LEN + 1), now);
    assert!(matches!(
        client.poll_event(),
        Some(CalloutEvent::Verified {
            outcome: CalloutOutcome::Unsure(_),
            ..
        })
    ));
    assert!(matches!(
        client.poll_event(),
        Some(CalloutEvent::Verified {
            outcome: CalloutOutcome::Unsure(_),
            ..
        })
    ));
    assert_eq!(client.poll_transmit(), None);
    client.handle_eof(now);
    client.verify("a@example.com", now);
    let events: Vec<_> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(matches!(events[0], CalloutEvent::Closed(Some(_))));
    assert!(matches!(
        &events[1],
        CalloutEvent::Verified { outcome: CalloutOutcome::Unsure(r), .. } if r.code == 451
    ));
}

#[test]
fn queue_is_bounded() {
    let now = Instant::now();
    let mut client = CalloutClient::new(config(), now);
    for i in 0..=MAX_QUEUED_VERIFIES {
        client.verify(&format!("u{i}@example.com"), now);
    }
    let events: Vec<_> = std::iter::from_fn(|| client.poll_event()).collect();
    assert_eq!(
        events,
        vec![verified(
            &format!("u{MAX_QUEUED_VERIFIES}@example.com"),
            CalloutOutcome::Unsure(Reply::new(451, "4.3.2", "Too many verifies waiting"))
        )]
    );
}

#[test]
fn quit_while_busy_answers_pending() {
    let now = Instant::now();
    let mut client = CalloutClient::new(config(), now);
    client.handle_input(PIPELINED_EHLO, now);
    client.verify("a@example.com", now);
    client.quit(now);
    let events: Vec<_> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(matches!(
        &events[1],
        CalloutEvent::Verified { outcome: CalloutOutcome::Unsure(r), .. } if r.code == 451
    ));
    assert_eq!(events[2], CalloutEvent::Closed(None));
}
