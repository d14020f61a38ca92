//! The connection skeleton every SMTP client core shares: the greeting, EHLO with the
//! HELO fallback, reading replies in the order the commands went out, per-reply
//! deadlines, command output (pipelined or lock-step), QUIT, and why a connection failed.
//!
//! It lives here, beside the delivery [`Client`](super::Client), and not in either
//! client, because both the delivery client and the recipient verification
//! [`CalloutClient`](crate::proto::smtp::callout::CalloutClient) open a connection the same way
//! (RFC 5321 §3.1, §4.1.1.1, §4.1.4, §4.2) and differ only in the commands they send
//! once it is open. Each client names its own commands ([`ClientCommand`]), picks the
//! timeout for each ([`ClientConnection::arm`]) and decides what a reply means
//! ([`Turn`]); this core keeps the order, the bytes and the clock. Like the clients it
//! does no I/O.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use crate::proto::smtp::client::Extensions;
use crate::proto::smtp::client_reply::{ReplyError, ReplyReader};
use crate::proto::smtp::reply::Reply;

/// A command of one client, sent once the connection is open: what its reply is for.
pub trait ClientCommand: Copy + Eq + Debug {
    /// The stage named in local replies ("Timeout waiting for MAIL reply").
    fn stage(self) -> &'static str;

    /// Whether `reply` is of a kind this command may get at all. RFC 5321 §4.2.1: only
    /// DATA gets an intermediate (3xx) reply, so by default none may.
    fn fits(self, reply: &Reply) -> bool {
        reply.code / 100 != 3
    }
}

/// A reply the server owes us, in the order the commands went out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect<C> {
    Greeting,
    Ehlo,
    Helo,
    /// One of the client's own commands.
    Command(C),
    Quit,
}

impl<C: ClientCommand> Expect<C> {
    /// The stage named in local replies.
    pub fn stage(self) -> &'static str {
        match self {
            Expect::Greeting => "greeting",
            Expect::Ehlo => "EHLO",
            Expect::Helo => "HELO",
            Expect::Command(command) => command.stage(),
            Expect::Quit => "QUIT",
        }
    }
}

/// Why a connection ends early, on the connection's side: the server's silence or
/// misbehaviour. Each knows the reply the client's pending work gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionFailure {
    /// RFC 5321 §4.5.3.2: no reply in time, at this stage.
    Timeout(&'static str),
    /// The server closed the connection, while waiting for this stage's reply if any.
    ConnectionLost(Option<&'static str>),
    /// The server's bytes are not a reply.
    Malformed(ReplyError),
    /// Bytes arrived when no reply was owed, or a reply of a kind the command cannot get.
    Unexpected,
}

impl ConnectionFailure {
    pub fn reply(&self) -> Reply {
        match self {
            ConnectionFailure::Timeout(stage) => {
                Reply::new(451, "4.4.2", format!("Timeout waiting for {stage} reply"))
            }
            ConnectionFailure::ConnectionLost(Some(stage)) => Reply::new(
                451,
                "4.4.2",
                format!("Connection lost while waiting for {stage} reply"),
            ),
            ConnectionFailure::ConnectionLost(None) => Reply::new(451, "4.4.2", "Connection lost"),
            ConnectionFailure::Malformed(error) => error.reply(),
            ConnectionFailure::Unexpected => {
                Reply::new(451, "4.5.0", "Protocol error: unexpected reply")
            }
        }
    }
}

/// What one reply read from the server means to the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn<C> {
    /// The connection core took care of it (EHLO after the greeting, HELO after a refused
    /// EHLO): the client only goes on as after any reply.
    Handled,
    /// EHLO (or HELO) went through, offering these extensions (none after HELO).
    Greeted(Extensions),
    /// RFC 5321 §3.1: the greeting, EHLO or HELO was refused; the server will not talk to
    /// us. The client says goodbye.
    Refused(Reply),
    /// RFC 5321 §3.8: a 421, the server is closing the connection.
    Closing(Reply),
    /// The reply to QUIT: the connection is over.
    QuitAnswered,
    /// The reply to one of the client's own commands.
    Reply(C, Reply),
    /// The server's bytes cannot be taken: the connection must end.
    Failed(ConnectionFailure),
}

/// The state of one client connection below its transactions: the reply reader, the
/// replies owed, commands held back, bytes to write and the deadline.
///
/// The client calls [`read`](Self::read) for each reply in what the socket gave,
/// re-arms the deadline with [`arm`](Self::arm) after every step, asks
/// [`expired`](Self::expired) from its `handle_timeout`, and hands
/// [`poll_transmit`](Self::poll_transmit) through as its own.
///
/// Memory: the reply reader (see [`ReplyReader`]), and the commands and expectations the
/// client queued, which it bounds.
#[derive(Debug)]
pub struct ClientConnection<C> {
    helo_name: String,
    reader: ReplyReader,
    /// Replies the server owes, oldest first.
    expected: VecDeque<Expect<C>>,
    /// Commands held back until the previous reply (no PIPELINING).
    held: VecDeque<(C, Vec<u8>)>,
    transmit: VecDeque<Vec<u8>>,
    deadline: Option<Instant>,
}

impl<C: ClientCommand> ClientConnection<C> {
    /// Waits for the server's greeting; `helo_name` is the name given in EHLO and HELO.
    /// The deadline is unarmed until the first [`arm`](Self::arm).
    pub fn new(helo_name: String) -> ClientConnection<C> {
        ClientConnection {
            helo_name,
            reader: ReplyReader::new(),
            expected: VecDeque::from([Expect::Greeting]),
            held: VecDeque::new(),
            transmit: VecDeque::new(),
            deadline: None,
        }
    }

    /// Reads the next reply from the front of `input`, moving `input` past what was read.
    /// `None` means more bytes are needed (all of `input` was taken). After
    /// [`Turn::Failed`] the connection must end: what is left of `input` is not read.
    pub fn read(&mut self, input: &mut &[u8]) -> Option<Turn<C>> {
        if self.expected.is_empty() {
            // Nothing is owed: a confused or injecting server.
            return Some(Turn::Failed(ConnectionFailure::Unexpected));
        }
        match self.reader.read(input) {
            Ok(Some(reply)) => Some(self.on_reply(reply)),
            Ok(None) => None,
            Err(error) => Some(Turn::Failed(ConnectionFailure::Malformed(error))),
        }
    }

    fn on_reply(&mut self, reply: Reply) -> Turn<C> {
        let Some(expect) = self.expected.pop_front() else {
            return Turn::Failed(ConnectionFailure::Unexpected);
        };
        if expect == Expect::Quit {
            return Turn::QuitAnswered;
        }
        if reply.code == 421 {
            return Turn::Closing(reply);
        }
        let fits = match expect {
            Expect::Greeting | Expect::Quit => true,
            Expect::Ehlo | Expect::Helo => reply.code / 100 != 3,
            Expect::Command(command) => command.fits(&reply),
        };
        if !fits {
            return Turn::Failed(ConnectionFailure::Unexpected);
        }
        match expect {
            Expect::Greeting if reply.code == 220 => {
                self.ehlo();
                Turn::Handled
            }
            Expect::Ehlo if reply.is_positive() => Turn::Greeted(Extensions::from_ehlo(&reply)),
            Expect::Ehlo if reply.is_permanent() => {
                // RFC 5321 §4.1.4: an older server; fall back to HELO.
                let line = format!("HELO {}\r\n", self.helo_name);
                self.push(Expect::Helo, line.into_bytes());
                Turn::Handled
            }
            Expect::Helo if reply.is_positive() => Turn::Greeted(Extensions::default()),
            Expect::Greeting | Expect::Ehlo | Expect::Helo | Expect::Quit => Turn::Refused(reply),
            Expect::Command(command) => Turn::Reply(command, reply),
        }
    }

    /// Sends EHLO: after the greeting, and again once TLS is up (RFC 3207 §4.2).
    pub fn ehlo(&mut self) {
        let line = format!("EHLO {}\r\n", self.helo_name);
        self.push(Expect::Ehlo, line.into_bytes());
    }

    /// Sends one command now.
    pub fn send(&mut self, command: C, line: impl Into<Vec<u8>>) {
        self.push(Expect::Command(command), line.into());
    }

    /// Sends a group of commands: in one write with `pipelining` (RFC 2920 §3.1),
    /// otherwise one at a time, each after the reply to the one before.
    pub fn send_group(&mut self, commands: Vec<(C, Vec<u8>)>, pipelining: bool) {
        if pipelining {
            let mut group = Vec::with_capacity(commands.iter().map(|(_, line)| line.len()).sum());
            for (command, line) in commands {
                group.extend_from_slice(&line);
                self.expected.push_back(Expect::Command(command));
            }
            self.transmit.push_back(group);
        } else {
            self.held.extend(commands);
            self.send_held();
        }
    }

    /// Sends the next held command if no reply is owed (lock-step without PIPELINING).
    pub fn send_held(&mut self) {
        if !self.expected.is_empty() {
            return;
        }
        if let Some((command, line)) = self.held.pop_front() {
            self.push(Expect::Command(command), line);
        }
    }

    fn push(&mut self, expect: Expect<C>, line: Vec<u8>) {
        self.transmit.push_back(line);
        self.expected.push_back(expect);
    }

    /// A reply is owed for something already written, without writing a command (the
    /// final reply after message content).
    pub fn expect_reply(&mut self, command: C) {
        self.expected.push_back(Expect::Command(command));
    }

    /// Sends QUIT and waits for its reply.
    pub fn quit(&mut self) {
        self.push(Expect::Quit, b"QUIT\r\n".to_vec());
    }

    /// Writes QUIT as a goodbye on a connection being closed: no reply is awaited.
    pub fn say_quit(&mut self) {
        self.transmit.push_back(b"QUIT\r\n".to_vec());
    }

    /// Writes bytes that are not a command (message content).
    pub fn write(&mut self, bytes: Vec<u8>) {
        self.transmit.push_back(bytes);
    }

    /// Forgets everything not written yet.
    pub fn clear_transmit(&mut self) {
        self.transmit.clear();
    }

    /// True when everything queued has been taken with `poll_transmit`.
    pub fn is_written(&self) -> bool {
        self.transmit.is_empty()
    }

    /// The next bytes to write to the server, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// Keeps only the held commands `keep` says yes to.
    pub fn retain_held(&mut self, keep: impl Fn(C) -> bool) {
        self.held.retain(|(command, _)| keep(*command));
    }

    /// Drops every held command: they will not be sent.
    pub fn clear_held(&mut self) {
        self.held.clear();
    }

    /// True while a reply is owed.
    pub fn owes_reply(&self) -> bool {
        !self.expected.is_empty()
    }

    /// True while a reply is owed or a command held back.
    pub fn is_busy(&self) -> bool {
        !self.expected.is_empty() || !self.held.is_empty()
    }

    /// True while a command `which` says yes to is held back or owed a reply.
    pub fn is_pending(&self, which: impl Fn(C) -> bool) -> bool {
        self.held.iter().any(|(command, _)| which(*command))
            || self.expected.iter().any(|e| match e {
                Expect::Command(command) => which(*command),
                _ => false,
            })
    }

    /// The reply owed first, if any.
    pub fn owed(&self) -> Option<Expect<C>> {
        self.expected.front().copied()
    }

    /// Forgets any part of a reply read so far: the bytes after a 220 to STARTTLS came in
    /// clear and may be injected (RFC 3207 §4.2).
    pub fn restart_reader(&mut self) {
        self.reader = ReplyReader::new();
    }

    /// Arms the deadline for the reply owed first, `timeout` saying how long it may take;
    /// none when nothing is owed.
    pub fn arm(&mut self, now: Instant, timeout: impl FnOnce(Expect<C>) -> Duration) {
        self.deadline = match self.expected.front() {
            // A timeout too large for the clock means none.
            Some(&expect) => now.checked_add(timeout(expect)),
            None => None,
        };
    }

    /// No deadline until the next `arm`: nothing is owed by the server for now.
    pub fn disarm(&mut self) {
        self.deadline = None;
    }

    /// When the deadline passes, if one is armed.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// At `now`: the reply that has not come in time, if the deadline has passed. A
    /// deadline with nothing owed is dropped.
    pub fn expired(&mut self, now: Instant) -> Option<Expect<C>> {
        match self.deadline {
            Some(deadline) if now >= deadline => {}
            _ => return None,
        }
        let owed = self.owed();
        if owed.is_none() {
            self.deadline = None;
        }
        owed
    }

    /// The connection is over: nothing more is owed, held or timed.
    pub fn close(&mut self) {
        self.expected.clear();
        self.held.clear();
        self.deadline = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Cmd {
        Noop,
        Data,
    }

    impl ClientCommand for Cmd {
        fn stage(self) -> &'static str {
            match self {
                Cmd::Noop => "NOOP",
                Cmd::Data => "DATA",
            }
        }

        fn fits(self, reply: &Reply) -> bool {
            self == Cmd::Data || reply.code / 100 != 3
        }
    }

    /// A reply without an enhanced code.
    fn plain(code: u16, text: &str) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines: vec![text.into()],
        }
    }

    fn written(conn: &mut ClientConnection<Cmd>) -> Vec<u8> {
        std::iter::from_fn(|| conn.poll_transmit())
            .flatten()
            .collect()
    }

    /// Every turn `server` gives, cut at `cuts`.
    fn turns(conn: &mut ClientConnection<Cmd>, server: &[u8], cuts: &[usize]) -> Vec<Turn<Cmd>> {
        let mut out = Vec::new();
        let mut start = 0;
        for end in cuts.iter().copied().chain([server.len()]) {
            let mut input = &server[start..end];
            while !input.is_empty() {
                // A failure ends the connection: the client reads no further.
                match conn.read(&mut input) {
                    Some(Turn::Failed(failure)) => {
                        out.push(Turn::Failed(failure));
                        return out;
                    }
                    turn => out.extend(turn),
                }
            }
            start = end;
        }
        out
    }

    #[test]
    fn greeting_ehlo_and_helo_fallback_read_the_same_however_cut() {
        let server = b"220 mx\r\n502 5.5.2 What\r\n250 mx\r\n";
        let whole = turns(&mut ClientConnection::new("gw".into()), server, &[]);
        assert_eq!(
            whole,
            vec![
                Turn::Handled,
                Turn::Handled,
                Turn::Greeted(Extensions::default())
            ]
        );
        for i in 0..=server.len() {
            let mut conn = ClientConnection::new("gw".into());
            assert_eq!(turns(&mut conn, server, &[i]), whole, "split at {i}");
            assert_eq!(written(&mut conn), b"EHLO gw\r\nHELO gw\r\n");
        }
    }

    #[test]
    fn ehlo_keywords_and_refusals() {
        let mut conn = ClientConnection::<Cmd>::new("gw".into());
        let got = turns(&mut conn, b"220 mx\r\n250-mx\r\n250 pipelining\r\n", &[]);
        let Some(Turn::Greeted(ext)) = got.last() else {
            panic!("{got:?}");
        };
        assert!(ext.esmtp && ext.pipelining);
        let mut conn = ClientConnection::<Cmd>::new("gw".into());
        assert_eq!(
            turns(&mut conn, b"554 5.3.2 Go away\r\n", &[]),
            vec![Turn::Refused(Reply::new(554, "5.3.2", "Go away"))]
        );
        let mut conn = ClientConnection::<Cmd>::new("gw".into());
        assert_eq!(
            turns(&mut conn, b"220 mx\r\n421 4.3.2 Bye\r\n", &[]),
            vec![
                Turn::Handled,
                Turn::Closing(Reply::new(421, "4.3.2", "Bye"))
            ]
        );
    }

    #[test]
    fn replies_go_to_the_commands_in_order_and_3xx_only_where_it_fits() {
        let mut conn = ClientConnection::new("gw".into());
        turns(&mut conn, b"220 mx\r\n250 mx\r\n", &[]);
        conn.send_group(
            vec![
                (Cmd::Noop, b"NOOP\r\n".to_vec()),
                (Cmd::Data, b"DATA\r\n".to_vec()),
            ],
            true,
        );
        conn.quit();
        written(&mut conn);
        assert_eq!(
            turns(&mut conn, b"250 ok\r\n354 go\r\n221 bye\r\n", &[]),
            vec![
                Turn::Reply(Cmd::Noop, plain(250, "ok")),
                Turn::Reply(Cmd::Data, plain(354, "go")),
                Turn::QuitAnswered,
            ]
        );
        assert_eq!(
            turns(&mut conn, b"250 more\r\n", &[]),
            vec![Turn::Failed(ConnectionFailure::Unexpected)]
        );
        let mut conn = ClientConnection::new("gw".into());
        conn.send(Cmd::Noop, b"NOOP\r\n".to_vec());
        turns(&mut conn, b"220 mx\r\n", &[]);
        assert_eq!(
            turns(&mut conn, b"354 go\r\n", &[]),
            vec![Turn::Failed(ConnectionFailure::Unexpected)]
        );
    }

    #[test]
    fn lock_step_holds_each_command_until_the_reply_before() {
        let mut conn = ClientConnection::new("gw".into());
        turns(&mut conn, b"220 mx\r\n250 mx\r\n", &[]);
        written(&mut conn);
        conn.send_group(
            vec![
                (Cmd::Noop, b"NOOP\r\n".to_vec()),
                (Cmd::Data, b"DATA\r\n".to_vec()),
            ],
            false,
        );
        assert_eq!(written(&mut conn), b"NOOP\r\n");
        assert!(conn.is_pending(|c| c == Cmd::Data));
        turns(&mut conn, b"250 ok\r\n", &[]);
        conn.send_held();
        assert_eq!(written(&mut conn), b"DATA\r\n");
        assert!(conn.is_pending(|c| c == Cmd::Data));
        assert!(!conn.is_pending(|c| c == Cmd::Noop));
    }

    #[test]
    fn the_deadline_is_for_the_reply_owed_first() {
        let now = Instant::now();
        let mut conn = ClientConnection::<Cmd>::new("gw".into());
        conn.arm(now, |expect| match expect {
            Expect::Greeting => Duration::from_secs(300),
            _ => Duration::from_secs(1),
        });
        let deadline = now + Duration::from_secs(300);
        assert_eq!(conn.deadline(), Some(deadline));
        assert_eq!(conn.expired(deadline - Duration::from_millis(1)), None);
        assert_eq!(conn.expired(deadline), Some(Expect::Greeting));
        assert_eq!(
            ConnectionFailure::Timeout(Expect::<Cmd>::Greeting.stage()).reply(),
            Reply::new(451, "4.4.2", "Timeout waiting for greeting reply")
        );
        turns(&mut conn, b"220 mx\r\n250 mx\r\n", &[]);
        // Nothing owed: an armed deadline is dropped when it passes.
        assert_eq!(conn.expired(deadline), None);
        assert_eq!(conn.deadline(), None);
        conn.arm(now, |_| Duration::from_secs(1));
        assert_eq!(conn.deadline(), None);
        conn.send(Cmd::Noop, b"NOOP\r\n".to_vec());
        conn.arm(now, |_| Duration::MAX);
        assert_eq!(
            conn.deadline(),
            None,
            "a timeout too large for the clock is none"
        );
        conn.close();
        assert!(!conn.is_busy());
    }
}
