//! The recipient verification callout core: asks an internal server whether a recipient
//! exists (`MAIL FROM:<>`, `RCPT TO:`, `RSET`) without sending a message.
//!
//! Bytes and time in; commands, verdicts and deadlines out. It knows nothing about
//! sockets, the verdict cache or which hosts exist. One connection answers many verifies.
//! The greeting, EHLO/HELO, reply reading, deadlines and QUIT are the delivery client's
//! too: both stand on [`ClientConnection`]; only the verify commands are here.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::smtp::client::connection::{
    ClientCommand, ClientConnection, ConnectionFailure as Failure, Expect, Turn,
};
use crate::smtp::reply::Reply;

/// RFC 5321 §4.5.3.1.3: a path is at most 256 octets with its angle brackets, so an
/// address is at most 254. Longer recipients are not sent; they are answered `Unsure`.
pub const MAX_RCPT_LEN: usize = 254;

/// Verifies waiting for the one in flight. Each holds one address of at most
/// [`MAX_RCPT_LEN`] octets: about 26 KiB at worst. More are answered `Unsure` at once.
pub const MAX_QUEUED_VERIFIES: usize = 100;

#[derive(Clone, Debug)]
pub struct CalloutConfig {
    /// The name we give in EHLO/HELO.
    pub helo_name: String,
    /// How long any one reply (the greeting included) may take. RFC 5321 §4.5.3.2 allows
    /// a server minutes; a callout holds an SMTP client waiting, so it is far shorter.
    pub reply_timeout: Duration,
}

impl Default for CalloutConfig {
    fn default() -> Self {
        CalloutConfig {
            helo_name: "localhost".into(),
            reply_timeout: Duration::from_secs(10),
        }
    }
}

/// What the internal server said of one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CalloutOutcome {
    /// RCPT got a 2xx.
    Exists,
    /// RCPT got a 5xx: the server's reply.
    Refused(Reply),
    /// No answer either way: a 4xx, MAIL refused, or the connection failed.
    Unsure(Reply),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CalloutEvent {
    /// The greeting and EHLO (or HELO) went through; `pipelining` tells whether the
    /// server offered RFC 2920 PIPELINING.
    Ready { pipelining: bool },
    /// The answer to one `verify`, in the order the verifies were asked.
    Verified {
        rcpt: String,
        outcome: CalloutOutcome,
    },
    /// The connection is over. `None` after an orderly QUIT, otherwise the reason.
    Closed(Option<Reply>),
}

/// A command of a verify: what the reply the server owes us is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    Mail,
    Rcpt,
    Rset,
}

impl ClientCommand for Command {
    fn stage(self) -> &'static str {
        match self {
            Command::Mail => "MAIL",
            Command::Rcpt => "RCPT",
            Command::Rset => "RSET",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Opening,
    Open,
    Quitting,
    Closed,
}

/// The verify in flight.
#[derive(Debug)]
struct InFlight {
    rcpt: String,
    /// The MAIL reply, once read.
    mail: Option<Reply>,
    /// The verdict went out already; only the RSET reply is still awaited.
    answered: bool,
}

/// One callout connection to an internal server.
///
/// Calling order, for the layer that owns the socket:
///
/// 1. `CalloutClient::new(config, now)` once the TCP connection is up.
/// 2. After every call below, drain `poll_transmit()` (write each buffer in full, in
///    order), then drain `poll_event()`, then re-arm the timer from `poll_timeout()`.
/// 3. Feed what the socket reads to `handle_input(bytes, now)`; call
///    `handle_timeout(now)` when the time from `poll_timeout()` has passed; call
///    `handle_eof(now)` when the server closes the connection.
/// 4. Call `verify(rcpt, now)` at any time, before `Ready` too: verifies run one after
///    the other, each answered by one `CalloutEvent::Verified` in the order asked.
///    `MAIL FROM:<>`, `RCPT TO:<rcpt>` and `RSET` go out in one write when the server
///    offers PIPELINING, else one at a time. `is_idle()` tells when none is pending.
/// 5. Call `quit(now)` to end the connection. After `CalloutEvent::Closed`
///    (`is_closed()`), write what `poll_transmit()` still gives and close the socket.
///    Every verify pending at that point has been answered `Unsure`.
///
/// Memory: the reply reader (see [`ReplyReader`](crate::smtp::client_reply::ReplyReader)), at most [`MAX_QUEUED_VERIFIES`]
/// queued addresses, and a few commands of at most 270 octets.
pub struct CalloutClient {
    config: CalloutConfig,
    phase: Phase,
    /// The greeting, EHLO/HELO, replies owed, commands held, bytes out and the deadline.
    conn: ClientConnection<Command>,
    pipelining: bool,
    in_flight: Option<InFlight>,
    queued: VecDeque<String>,
    events: VecDeque<CalloutEvent>,
}

impl CalloutClient {
    /// Starts waiting for the server's greeting.
    pub fn new(config: CalloutConfig, now: Instant) -> CalloutClient {
        let mut client = CalloutClient {
            conn: ClientConnection::new(config.helo_name.clone()),
            config,
            phase: Phase::Opening,
            pipelining: false,
            in_flight: None,
            queued: VecDeque::new(),
            events: VecDeque::new(),
        };
        client.arm(now);
        client
    }

    /// Bytes read from the server.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        let mut input = bytes;
        while !input.is_empty() && self.phase != Phase::Closed {
            if let Some(turn) = self.conn.read(&mut input) {
                self.on_turn(turn, now);
            }
        }
    }

    /// The time from `poll_timeout()` has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        match self.conn.expired(now) {
            None => {}
            Some(Expect::Quit) => self.close(None),
            Some(expect) => self.fail(Failure::Timeout(expect.stage())),
        }
    }

    /// The server closed the connection.
    pub fn handle_eof(&mut self, _now: Instant) {
        match self.phase {
            Phase::Closed => {}
            Phase::Quitting => self.close(None),
            Phase::Opening | Phase::Open => {
                let stage = self.conn.owed().map(Expect::stage);
                self.fail(Failure::ConnectionLost(stage));
            }
        }
    }

    /// Asks whether `rcpt` (an address without angle brackets) exists. The answer comes
    /// as `CalloutEvent::Verified`.
    pub fn verify(&mut self, rcpt: &str, now: Instant) {
        let unsendable = rcpt.len() > MAX_RCPT_LEN
            || rcpt
                .bytes()
                .any(|b| b.is_ascii_control() || b == b'<' || b == b'>');
        let refusal = if unsendable {
            Some(Reply::new(
                451,
                "4.1.3",
                "Recipient address cannot be verified",
            ))
        } else if matches!(self.phase, Phase::Closed | Phase::Quitting) {
            Some(Reply::new(451, "4.4.2", "Callout connection closed"))
        } else if self.queued.len() >= MAX_QUEUED_VERIFIES {
            Some(Reply::new(451, "4.3.2", "Too many verifies waiting"))
        } else {
            None
        };
        if let Some(reply) = refusal {
            self.answer(rcpt.to_string(), CalloutOutcome::Unsure(reply));
            return;
        }
        self.queued.push_back(rcpt.to_string());
        self.start_next(now);
    }

    /// Ends the connection: QUIT when idle. Verifies pending are answered `Unsure`.
    pub fn quit(&mut self, now: Instant) {
        match self.phase {
            Phase::Closed | Phase::Quitting => {}
            Phase::Opening => self.close(None),
            Phase::Open if !self.is_idle() => {
                let reply = Reply::new(451, "4.4.2", "Callout aborted: connection closed locally");
                self.answer_pending(&reply);
                self.close(None);
            }
            Phase::Open => {
                self.conn.quit();
                self.phase = Phase::Quitting;
                self.arm(now);
            }
        }
    }

    /// True when the connection is open and no verify is pending.
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Open && self.in_flight.is_none() && self.queued.is_empty()
    }

    /// True once the greeting and EHLO/HELO went through and the connection still stands.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// True once `CalloutEvent::Closed` was emitted.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The next bytes to write to the server, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.conn.poll_transmit()
    }

    pub fn poll_event(&mut self) -> Option<CalloutEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must be called, if a reply is owed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Closed {
            None
        } else {
            self.conn.deadline()
        }
    }

    /// Arms the deadline for the reply owed first: any reply may take `reply_timeout`.
    fn arm(&mut self, now: Instant) {
        let timeout = self.config.reply_timeout;
        self.conn.arm(now, |_| timeout);
    }

    /// Starts the next queued verify when the connection is open and none is in flight.
    fn start_next(&mut self, now: Instant) {
        if self.phase != Phase::Open || self.in_flight.is_some() {
            return;
        }
        let Some(rcpt) = self.queued.pop_front() else {
            return;
        };
        // RFC 2920 §3.1: with PIPELINING the three go out in one write.
        let commands = vec![
            (Command::Mail, b"MAIL FROM:<>\r\n".to_vec()),
            (Command::Rcpt, format!("RCPT TO:<{rcpt}>\r\n").into_bytes()),
            (Command::Rset, b"RSET\r\n".to_vec()),
        ];
        self.conn.send_group(commands, self.pipelining);
        self.in_flight = Some(InFlight {
            rcpt,
            mail: None,
            answered: false,
        });
        self.arm(now);
    }

    fn on_turn(&mut self, turn: Turn<Command>, now: Instant) {
        match turn {
            Turn::Handled => {}
            Turn::QuitAnswered => {
                self.close(None);
                return;
            }
            Turn::Failed(failure) => {
                self.fail(failure);
                return;
            }
            Turn::Closing(reply) => {
                // RFC 5321 §3.8: the server is closing the connection.
                self.answer_pending(&reply);
                self.close(Some(reply));
                return;
            }
            Turn::Refused(reply) => {
                // RFC 5321 §3.1: the server will not talk to us; say goodbye.
                self.conn.say_quit();
                self.answer_pending(&reply);
                self.close(Some(reply));
                return;
            }
            Turn::Greeted(ext) => self.open(ext.pipelining, now),
            Turn::Reply(Command::Mail, reply) => self.on_mail(reply),
            Turn::Reply(Command::Rcpt, reply) => self.on_rcpt(reply),
            Turn::Reply(Command::Rset, reply) => {
                self.answer_pending_in_flight(&reply);
                self.in_flight = None;
                if !reply.is_positive() {
                    // The next verify cannot start clean.
                    self.answer_pending(&reply);
                    self.close(Some(reply));
                    return;
                }
            }
        }
        self.conn.send_held();
        self.start_next(now);
        self.arm(now);
    }

    fn open(&mut self, pipelining: bool, now: Instant) {
        self.phase = Phase::Open;
        self.pipelining = pipelining;
        self.events.push_back(CalloutEvent::Ready { pipelining });
        self.start_next(now);
    }

    fn on_mail(&mut self, reply: Reply) {
        let Some(flight) = self.in_flight.as_mut() else {
            return;
        };
        if reply.is_positive() {
            flight.mail = Some(reply);
            return;
        }
        // The null sender refused: nothing can be learnt of the recipient here.
        // Without PIPELINING the RCPT is not sent at all; RSET still is.
        self.conn.retain_held(|command| command != Command::Rcpt);
        flight.mail = Some(reply.clone());
        self.answer_in_flight(CalloutOutcome::Unsure(reply));
    }

    fn on_rcpt(&mut self, reply: Reply) {
        let Some(flight) = self.in_flight.as_ref() else {
            return;
        };
        if flight.answered {
            // A pipelined RCPT after a refused MAIL: its reply says nothing.
            return;
        }
        let outcome = if reply.is_positive() {
            CalloutOutcome::Exists
        } else if reply.is_permanent() {
            CalloutOutcome::Refused(reply)
        } else {
            CalloutOutcome::Unsure(reply)
        };
        self.answer_in_flight(outcome);
    }

    /// Answers the verify in flight, once.
    fn answer_in_flight(&mut self, outcome: CalloutOutcome) {
        let Some(flight) = self.in_flight.as_mut() else {
            return;
        };
        if flight.answered {
            return;
        }
        flight.answered = true;
        let rcpt = flight.rcpt.clone();
        self.answer(rcpt, outcome);
    }

    fn answer_pending_in_flight(&mut self, reply: &Reply) {
        self.answer_in_flight(CalloutOutcome::Unsure(reply.clone()));
    }

    /// Answers every verify not answered yet with `Unsure(reply)`.
    fn answer_pending(&mut self, reply: &Reply) {
        self.answer_pending_in_flight(reply);
        self.in_flight = None;
        while let Some(rcpt) = self.queued.pop_front() {
            self.answer(rcpt, CalloutOutcome::Unsure(reply.clone()));
        }
    }

    fn answer(&mut self, rcpt: String, outcome: CalloutOutcome) {
        self.events
            .push_back(CalloutEvent::Verified { rcpt, outcome });
    }

    fn fail(&mut self, failure: Failure) {
        let reply = failure.reply();
        self.answer_pending(&reply);
        self.close(Some(reply));
    }

    fn close(&mut self, reason: Option<Reply>) {
        if self.phase == Phase::Closed {
            return;
        }
        if reason.is_none() {
            let reply = Reply::new(451, "4.4.2", "Callout connection closed");
            self.answer_pending(&reply);
        }
        self.phase = Phase::Closed;
        self.conn.close();
        self.events.push_back(CalloutEvent::Closed(reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::client_reply::ReplyError;

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
                        enhanced: Some(crate::smtp::reply::Enhanced::new(5, 1, 1)),
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
}
