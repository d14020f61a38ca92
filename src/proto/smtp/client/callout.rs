//! The recipient verification callout core: asks an internal server whether a recipient
//! exists (`MAIL FROM:<>`, `RCPT TO:`, `RSET`) without sending a message. **Invariant:**
//! it never sends DATA or BDAT: a callout verifies, it never delivers.
//!
//! Bytes and time in; commands, verdicts and deadlines out. It knows nothing about
//! sockets, the verdict cache or which hosts exist. One connection answers many verifies.
//! The greeting, EHLO/HELO, reply reading, deadlines and QUIT are the delivery client's
//! too: both stand on [`ClientConnection`]; only the verify commands are here.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::proto::smtp::client::connection::{
    ClientCommand, ClientConnection, ConnectionFailure as Failure, Expect, Turn,
};
use crate::proto::smtp::reply::Reply;

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
/// Memory: the reply reader (see
/// [`ReplyReader`](crate::proto::smtp::client_reply::ReplyReader)), at most
/// [`MAX_QUEUED_VERIFIES`] queued addresses, and a few commands of at most 270 octets.
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
                self.close_with(reply);
                return;
            }
            Turn::Refused(reply) => {
                // RFC 5321 §3.1: the server will not talk to us; say goodbye.
                self.conn.say_quit();
                self.close_with(reply);
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
                    self.close_with(reply);
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
        self.close_with(failure.reply());
    }

    /// Closes for `reason`, every pending verify answered `Unsure(reason)`.
    fn close_with(&mut self, reason: Reply) {
        self.answer_pending(&reason);
        self.close(Some(reason));
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
mod tests;
