//! Shutting down (RFC 5321 §3.8): idle sessions leave with 421 at once, a transaction
//! in progress ends first, and the deadline ends everything.

use super::*;

const LEAVING: &[u8] = b"421 4.3.2 mx.test Service shutting down\r\n";
const GRACE: Duration = Duration::from_secs(8);

fn shut_down() -> Step {
    Step::ShutDown(GRACE)
}

fn closed_for_shutdown(o: &Outcome) -> bool {
    o.closed && o.events.last() == Some(&Event::Closing(CloseReason::Shutdown))
}

#[test]
fn an_idle_session_is_told_421_at_once() {
    let o = check(
        &config(),
        &[
            s(GREETING),
            c("EHLO client.example\r\n"),
            Step::Any,
            shut_down(),
            s(LEAVING),
        ],
    );
    assert!(closed_for_shutdown(&o), "{:?}", o.events);
    assert!(o.out.ends_with(LEAVING));
}

#[test]
fn a_transaction_in_progress_ends_before_the_421() {
    let o = check(
        &config(),
        &with(
            opening(),
            vec![
                shut_down(),
                // Nothing is said while the transaction is open.
                c("RCPT TO:<c@example.com>\r\n"),
                s(RCPT_OK),
                c("DATA\r\n"),
                s(GO_AHEAD),
                c("Subject: last\r\n\r\nbody\r\n.\r\n"),
                s(QUEUED),
                s(LEAVING),
            ],
        ),
    );
    assert_eq!(
        o.committed(),
        vec![b"Subject: last\r\n\r\nbody\r\n".to_vec()]
    );
    assert!(closed_for_shutdown(&o), "{:?}", o.events);
}

#[test]
fn a_command_pipelined_after_the_last_message_gets_the_421() {
    let o = check(
        &config(),
        &with(
            in_data(b"one\r\n"),
            vec![
                shut_down(),
                c(".\r\nMAIL FROM:<x@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"),
                s(QUEUED),
                s(LEAVING),
            ],
        ),
    );
    assert_eq!(o.message_ends(), 1);
    assert_eq!(
        o.count(|e| matches!(e, Event::CheckMail { from, .. } if from == "x@example.org")),
        0,
        "no new transaction begins"
    );
    assert!(closed_for_shutdown(&o));
}

#[test]
fn rset_ends_the_transaction_and_quit_still_gets_its_221() {
    let o = check(
        &config(),
        &with(
            opening(),
            vec![shut_down(), c("RSET\r\n"), s(OK), s(LEAVING)],
        ),
    );
    assert!(closed_for_shutdown(&o));
    let o = check(
        &config(),
        &with(opening(), vec![shut_down(), c("QUIT\r\n"), s(BYE)]),
    );
    assert!(o.closed && !has(&o.out, LEAVING));
    assert_eq!(o.events.last(), Some(&Event::Closing(CloseReason::Quit)));
}

#[test]
fn the_deadline_ends_a_message_not_yet_answered() {
    let o = check(
        &config(),
        &with(
            in_data(b"Subject: slow\r\n\r\nhalf"),
            vec![shut_down(), secs(7), s(b""), secs(1), s(LEAVING)],
        ),
    );
    assert_eq!(o.message_ends(), 0);
    assert!(o.committed().is_empty());
    assert!(
        o.events
            .ends_with(&[Event::MessageAbort, Event::Closing(CloseReason::Shutdown)]),
        "{:?}",
        o.events
    );
}

#[test]
fn the_deadline_is_a_timeout_of_its_own() {
    let start = Instant::now();
    let mut session = Session::new(Rc::new(config()), start);
    session.handle_input(
        b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n",
        start,
    );
    let (mut out, mut events) = (Vec::new(), Vec::new());
    drain(&mut session, start, &mut out, &mut events);
    session.shut_down(start + GRACE, start);
    assert_eq!(session.poll_timeout(), Some(start + GRACE));
    session.handle_timeout(start + GRACE);
    assert!(session.is_closed());
}

#[test]
fn a_greeting_not_yet_sent_becomes_the_421() {
    let cfg = ServerConfig {
        greet_delay: Duration::from_secs(5),
        ..config()
    };
    let o = check(&cfg, &[shut_down(), s(LEAVING)]);
    assert!(!has(&o.out, GREETING));
    assert!(closed_for_shutdown(&o));
}
