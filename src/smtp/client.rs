//! The SMTP client core: bytes and time in; commands, events and deadlines out.
//!
//! Speaks the client side of RFC 5321 with SIZE (RFC 1870), PIPELINING (RFC 2920),
//! 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), DSN (RFC 3461) and enhanced status codes
//! (RFC 2034). It knows nothing about sockets, TLS, DNS or the queue.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::smtp::client_reply::{ReplyError, ReplyReader};
use crate::smtp::reply::Reply;

/// Octets of message content dot-stuffed into one transmit while sending DATA.
///
/// Each transmit holds at most twice this (a stuffed dot or a bare CR or LF made CRLF
/// doubles a byte) plus the 5-octet end of data: 128 KiB + 5 octets, and only one exists
/// at a time, so a large message is never copied whole.
pub const DATA_CHUNK: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub helo_name: String,
    pub greeting_timeout: Duration,
    pub command_timeout: Duration,
    pub data_init_timeout: Duration,
    pub data_block_timeout: Duration,
    pub data_done_timeout: Duration,
}

impl Default for ClientConfig {
    /// RFC 5321 §4.5.3.2: 5 min greeting and commands, 2 min DATA, 3 min per data
    /// block, 10 min after the final dot.
    fn default() -> Self {
        ClientConfig {
            helo_name: "localhost".into(),
            greeting_timeout: Duration::from_secs(300),
            command_timeout: Duration::from_secs(300),
            data_init_timeout: Duration::from_secs(120),
            data_block_timeout: Duration::from_secs(180),
            data_done_timeout: Duration::from_secs(600),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingRcpt {
    pub address: String,
    /// RFC 3461 NOTIFY value as written on the wire, e.g. "SUCCESS,FAILURE".
    pub notify: Option<String>,
    /// RFC 3461 ORCPT value, already xtext-encoded, e.g. "rfc822;a@b".
    pub orcpt: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub from: String,
    pub rcpts: Vec<OutgoingRcpt>,
    /// The message content, CRLF lines, not dot-stuffed.
    pub content: Rc<[u8]>,
    pub eight_bit: bool,
    pub smtputf8: bool,
    pub ret: Option<String>,
    pub envid: Option<String>,
}

/// What the server offered in its EHLO reply. All false after a HELO.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Extensions {
    pub esmtp: bool,
    pub pipelining: bool,
    /// RFC 1870: `Some(0)` when SIZE is offered without a fixed limit.
    pub size: Option<u64>,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub starttls: bool,
    pub chunking: bool,
    pub enhanced_status_codes: bool,
}

impl Extensions {
    /// Reads the keyword lines of a positive EHLO reply (RFC 5321 §4.1.1.1): the first
    /// line names the server; keywords are case-insensitive; unknown ones are ignored.
    fn from_ehlo(reply: &Reply) -> Extensions {
        let mut ext = Extensions {
            esmtp: true,
            ..Extensions::default()
        };
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let is = |name: &str| keyword.eq_ignore_ascii_case(name);
            if is("PIPELINING") {
                ext.pipelining = true;
            } else if is("SIZE") {
                // RFC 1870 §4: a missing, zero or unreadable limit means no fixed limit.
                ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0));
            } else if is("8BITMIME") {
                ext.eight_bit_mime = true;
            } else if is("SMTPUTF8") {
                ext.smtputf8 = true;
            } else if is("DSN") {
                ext.dsn = true;
            } else if is("STARTTLS") {
                ext.starttls = true;
            } else if is("CHUNKING") {
                ext.chunking = true;
            } else if is("ENHANCEDSTATUSCODES") {
                ext.enhanced_status_codes = true;
            }
        }
        ext
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// The greeting and EHLO (or HELO) went through; `send` may be called.
    Ready(Extensions),
    /// The outcome of one `send`: one reply per recipient, in the order of `msg.rcpts`.
    TransactionDone(Vec<Reply>),
    /// The connection is over; the layer closes the socket after writing what
    /// `poll_transmit` still gives. `None` after an orderly QUIT, otherwise the reason.
    Closed(Option<Reply>),
}

/// A reply the server owes us, in the order the commands went out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Greeting,
    Ehlo,
    Helo,
    Rset,
    Mail,
    /// The RCPT for this index of `msg.rcpts`.
    Rcpt(usize),
    Data,
    /// The reply to the final dot after the content.
    EndOfData,
    /// The reply to a lone dot ending a DATA that had no accepted recipient.
    AbandonedData,
    Quit,
}

impl Expect {
    /// The stage named in local replies.
    fn stage(self) -> &'static str {
        match self {
            Expect::Greeting => "greeting",
            Expect::Ehlo => "EHLO",
            Expect::Helo => "HELO",
            Expect::Rset => "RSET",
            Expect::Mail => "MAIL",
            Expect::Rcpt(_) => "RCPT",
            Expect::Data => "DATA",
            Expect::EndOfData | Expect::AbandonedData => "end of data",
            Expect::Quit => "QUIT",
        }
    }
}

/// Why a connection ends early. The server's misbehaviour and silence are told apart
/// from our own misuse; each knows the reply its in-flight recipients get.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Failure {
    /// RFC 5321 §4.5.3.2: no reply in time.
    Timeout(Expect),
    /// RFC 5321 §4.5.3.2: a data block could not be handed out in time.
    DataBlockTimeout,
    /// The server closed the connection.
    ConnectionLost(Option<Expect>),
    /// The server's bytes are not a reply.
    Malformed(ReplyError),
    /// Bytes arrived when no reply was owed, or a positive reply before the end of data.
    Unexpected,
    /// The server refused RSET, so the next transaction cannot start clean.
    RsetRefused(u16),
}

impl Failure {
    fn reply(&self) -> Reply {
        match self {
            Failure::Timeout(expect) => Reply::new(
                451,
                "4.4.2",
                format!("Timeout waiting for {} reply", expect.stage()),
            ),
            Failure::DataBlockTimeout => Reply::new(451, "4.4.2", "Timeout sending message data"),
            Failure::ConnectionLost(Some(expect)) => Reply::new(
                451,
                "4.4.2",
                format!("Connection lost while waiting for {} reply", expect.stage()),
            ),
            Failure::ConnectionLost(None) => Reply::new(451, "4.4.2", "Connection lost"),
            Failure::Malformed(error) => error.reply(),
            Failure::Unexpected => Reply::new(451, "4.5.0", "Protocol error: unexpected reply"),
            Failure::RsetRefused(code) => Reply::new(
                451,
                "4.5.0",
                format!("Protocol error: RSET refused with {code}"),
            ),
        }
    }
}

/// Where a recipient of the transaction in flight stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RcptState {
    /// RCPT not answered yet.
    Pending,
    /// RCPT answered positively; the outcome of DATA decides.
    Accepted,
    Done(Reply),
}

/// The transaction in flight: the message and where each recipient stands.
#[derive(Debug)]
struct Transaction {
    msg: OutgoingMessage,
    rcpts: Vec<RcptState>,
    mail_failed: bool,
}

impl Transaction {
    fn accepted(&self) -> usize {
        self.rcpts
            .iter()
            .filter(|r| **r == RcptState::Accepted)
            .count()
    }

    /// Gives `reply` to every recipient not settled yet.
    fn settle_unsettled(&mut self, reply: &Reply) {
        for r in &mut self.rcpts {
            if !matches!(r, RcptState::Done(_)) {
                *r = RcptState::Done(reply.clone());
            }
        }
    }

    /// Gives `reply` to every recipient whose RCPT was accepted.
    fn settle_accepted(&mut self, reply: &Reply) {
        for r in &mut self.rcpts {
            if *r == RcptState::Accepted {
                *r = RcptState::Done(reply.clone());
            }
        }
    }

    /// One reply per recipient; those left unsettled get `unsettled`.
    fn into_replies(self, unsettled: &Reply) -> Vec<Reply> {
        self.rcpts
            .into_iter()
            .map(|r| match r {
                RcptState::Done(reply) => reply,
                RcptState::Pending | RcptState::Accepted => unsettled.clone(),
            })
            .collect()
    }
}

/// Dot-stuffs message content chunk by chunk (RFC 5321 §4.5.2) and ends it with
/// `CRLF.CRLF`.
///
/// A bare CR or LF becomes CRLF, so nothing in the content can end the data early or be
/// read differently by the server. Content not ending in a line break gets one.
#[derive(Debug)]
struct DataStream {
    content: Rc<[u8]>,
    pos: usize,
    /// The next byte starts a line (a dot there is doubled).
    line_start: bool,
    /// The last byte read was a CR whose line break is not written yet.
    pending_cr: bool,
}

impl DataStream {
    fn new(content: Rc<[u8]>) -> DataStream {
        DataStream {
            content,
            pos: 0,
            line_start: true,
            pending_cr: false,
        }
    }

    /// The next chunk and whether it was the last.
    fn next_chunk(&mut self) -> (Vec<u8>, bool) {
        let end = self.content.len().min(self.pos.saturating_add(DATA_CHUNK));
        let input = &self.content[self.pos..end];
        // Worst case: every byte doubled, then CRLF.CRLF.
        let mut out = Vec::with_capacity(input.len() * 2 + 5);
        for &b in input {
            if self.pending_cr {
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                self.line_start = true;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.line_start = true;
                }
                _ => {
                    if self.line_start && b == b'.' {
                        out.push(b'.');
                    }
                    out.push(b);
                    self.line_start = false;
                }
            }
        }
        self.pos = end;
        let last = end == self.content.len();
        if last {
            if self.pending_cr || !self.line_start {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b".\r\n");
        }
        (out, last)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the greeting or the EHLO/HELO reply.
    Opening,
    /// `Ready` was emitted; transactions may run.
    Open,
    /// QUIT went out; waiting for its reply.
    Quitting,
    Closed,
}

/// One outgoing SMTP connection to a next hop.
///
/// Calling order, for the layer that owns the socket:
///
/// 1. `Client::new(config, now)` once the TCP connection is up.
/// 2. After every call below, drain `poll_transmit()` (write each buffer in full, in
///    order), then drain `poll_event()`, then re-arm the timer from `poll_timeout()`.
/// 3. Feed what the socket reads to `handle_input(bytes, now)`; call
///    `handle_timeout(now)` when the time from `poll_timeout()` has passed; call
///    `handle_eof(now)` when the server closes the connection.
/// 4. After `ClientEvent::Ready`, and whenever `is_ready()` is true, call
///    `send(msg, now)` for the next message; its outcome comes as
///    `ClientEvent::TransactionDone`. Call `quit(now)` to end the connection.
/// 5. After `ClientEvent::Closed` (`is_closed()` is true), write what `poll_transmit()`
///    still gives and close the socket; the client takes no more input.
///
/// Message content is handed out by `poll_transmit()` in chunks of [`DATA_CHUNK`]
/// octets. The core cannot see when the layer finishes writing them, so the data-block
/// and final-dot deadlines are re-armed from the `now` of the `handle_timeout` call that
/// finds chunks were handed out since the deadline was armed: a stall is detected within
/// two data-block timeouts, and the final reply gets at least `data_done_timeout` once
/// the last chunk is written.
pub struct Client {
    config: Rc<ClientConfig>,
    phase: Phase,
    reader: ReplyReader,
    /// Replies the server owes, oldest first.
    expected: VecDeque<Expect>,
    /// Commands held back until the previous reply (no PIPELINING).
    held: VecDeque<(Expect, String)>,
    /// What the server offered; `Some` from `Ready` on.
    extensions: Option<Extensions>,
    transaction: Option<Transaction>,
    /// Content still to be handed out after a 354.
    data: Option<DataStream>,
    /// Content was handed out since the deadline was last armed.
    data_progress: bool,
    /// A transaction may be open at the server: RSET before the next MAIL.
    needs_rset: bool,
    deadline: Option<Instant>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<ClientEvent>,
}

impl Client {
    /// Starts waiting for the server's greeting.
    pub fn new(config: Rc<ClientConfig>, now: Instant) -> Client {
        let mut client = Client {
            config,
            phase: Phase::Opening,
            reader: ReplyReader::new(),
            expected: VecDeque::from([Expect::Greeting]),
            held: VecDeque::new(),
            extensions: None,
            transaction: None,
            data: None,
            data_progress: false,
            needs_rset: false,
            deadline: None,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        };
        client.arm(now);
        client
    }

    /// Bytes read from the server.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        let mut input = bytes;
        while !input.is_empty() && self.phase != Phase::Closed {
            if self.expected.is_empty() {
                // Nothing is owed: a confused or injecting server.
                self.fail(Failure::Unexpected);
                return;
            }
            match self.reader.read(&mut input) {
                Ok(Some(reply)) => self.on_reply(reply, now),
                Ok(None) => {}
                Err(error) => self.fail(Failure::Malformed(error)),
            }
        }
    }

    /// The time from `poll_timeout()` has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        match self.deadline {
            Some(deadline) if now >= deadline => {}
            _ => return,
        }
        match self.expected.front().copied() {
            None => self.deadline = None,
            Some(Expect::Quit) => self.close(None),
            Some(Expect::EndOfData) if self.data_progress => self.arm(now),
            Some(Expect::EndOfData) if self.data.is_some() => self.fail(Failure::DataBlockTimeout),
            Some(expect) => self.fail(Failure::Timeout(expect)),
        }
    }

    /// The server closed the connection.
    pub fn handle_eof(&mut self, _now: Instant) {
        match self.phase {
            Phase::Closed => {}
            Phase::Quitting => self.close(None),
            Phase::Opening | Phase::Open => {
                let expect = self.expected.front().copied();
                self.fail(Failure::ConnectionLost(expect));
            }
        }
    }

    /// Starts a mail transaction; its outcome comes as `ClientEvent::TransactionDone`.
    ///
    /// Only when `is_ready()`; otherwise every recipient gets a local 451.
    pub fn send(&mut self, msg: OutgoingMessage, now: Instant) {
        debug_assert!(self.is_ready(), "send() on a client that is not ready");
        let ext = match (&self.extensions, self.is_ready()) {
            (Some(ext), true) => ext.clone(),
            _ => {
                let reply = Reply::new(451, "4.3.0", "Connection not ready for a transaction");
                let replies = vec![reply; msg.rcpts.len()];
                self.events.push_back(ClientEvent::TransactionDone(replies));
                return;
            }
        };
        let everyone = |reply: Reply| vec![reply; msg.rcpts.len()];
        let local = if ext
            .size
            .is_some_and(|limit| limit > 0 && msg.content.len() as u64 > limit)
        {
            Some(everyone(Reply::new(
                552,
                "5.3.4",
                "Message size exceeds remote limit",
            )))
        } else if msg.smtputf8 && !ext.smtputf8 {
            // RFC 6531 §3.4.
            Some(everyone(Reply::new(
                553,
                "5.6.7",
                "Remote server does not support SMTPUTF8",
            )))
        } else if ![Some(&msg.from), msg.ret.as_ref(), msg.envid.as_ref()]
            .into_iter()
            .flatten()
            .all(|s| is_safe_on_wire(s))
        {
            Some(everyone(Reply::new(
                553,
                "5.1.7",
                "Bad sender address syntax",
            )))
        } else {
            None
        };
        if let Some(replies) = local {
            self.events.push_back(ClientEvent::TransactionDone(replies));
            return;
        }

        let rcpts: Vec<RcptState> = msg
            .rcpts
            .iter()
            .map(|r| {
                let fields = [Some(&r.address), r.notify.as_ref(), r.orcpt.as_ref()];
                if fields.into_iter().flatten().all(|s| is_safe_on_wire(s)) {
                    RcptState::Pending
                } else {
                    let reply = Reply::new(553, "5.1.3", "Bad destination mailbox address syntax");
                    RcptState::Done(reply)
                }
            })
            .collect();
        let txn = Transaction {
            msg,
            rcpts,
            mail_failed: false,
        };
        if !txn.rcpts.contains(&RcptState::Pending) {
            let replies = txn.into_replies(&Failure::Unexpected.reply());
            self.events.push_back(ClientEvent::TransactionDone(replies));
            return;
        }

        let mut commands = Vec::new();
        if self.needs_rset {
            commands.push((Expect::Rset, "RSET\r\n".to_string()));
        }
        commands.push((Expect::Mail, mail_command(&txn.msg, &ext)));
        for (i, rcpt) in txn.msg.rcpts.iter().enumerate() {
            if txn.rcpts[i] == RcptState::Pending {
                commands.push((Expect::Rcpt(i), rcpt_command(rcpt, &ext)));
            }
        }
        // RFC 2920 §3.1: DATA ends the group.
        commands.push((Expect::Data, "DATA\r\n".to_string()));
        self.needs_rset = true;
        self.transaction = Some(txn);

        if ext.pipelining {
            let mut group = Vec::new();
            for (expect, line) in commands {
                group.extend_from_slice(line.as_bytes());
                self.expected.push_back(expect);
            }
            self.transmit.push_back(group);
        } else {
            self.held.extend(commands);
            self.send_held();
        }
        self.arm(now);
    }

    /// Ends the connection: QUIT when idle. A transaction in flight is abandoned, its
    /// unsettled recipients getting a local 451.
    pub fn quit(&mut self, now: Instant) {
        match self.phase {
            Phase::Closed | Phase::Quitting => {}
            Phase::Opening => self.close(None),
            Phase::Open if self.transaction.is_some() => {
                let reply = Reply::new(451, "4.4.2", "Delivery aborted: connection closed locally");
                self.settle_and_close(&reply, None, false);
            }
            Phase::Open => {
                self.transmit.push_back(b"QUIT\r\n".to_vec());
                self.expected.push_back(Expect::Quit);
                self.phase = Phase::Quitting;
                self.arm(now);
            }
        }
    }

    /// True when `send` may be called: open and no transaction in flight.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Open && self.transaction.is_none()
    }

    /// True once `ClientEvent::Closed` was emitted.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The next bytes to write to the server, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if let Some(out) = self.transmit.pop_front() {
            return Some(out);
        }
        let stream = self.data.as_mut()?;
        let (chunk, last) = stream.next_chunk();
        if last {
            self.data = None;
        }
        self.data_progress = true;
        Some(chunk)
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must be called, if a reply is owed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Closed {
            None
        } else {
            self.deadline
        }
    }

    /// Arms the deadline for the reply at the head of `expected`.
    fn arm(&mut self, now: Instant) {
        self.data_progress = false;
        let Some(&expect) = self.expected.front() else {
            self.deadline = None;
            return;
        };
        let c = &self.config;
        let timeout = match expect {
            Expect::Greeting => c.greeting_timeout,
            Expect::Data => c.data_init_timeout,
            Expect::EndOfData if self.data.is_some() => c.data_block_timeout,
            Expect::EndOfData => c.data_done_timeout,
            Expect::Ehlo
            | Expect::Helo
            | Expect::Rset
            | Expect::Mail
            | Expect::Rcpt(_)
            | Expect::AbandonedData
            | Expect::Quit => c.command_timeout,
        };
        // A timeout too large for the clock means none.
        self.deadline = now.checked_add(timeout);
    }

    /// Sends the next held command if no reply is owed (lock-step without PIPELINING).
    fn send_held(&mut self) {
        if !self.expected.is_empty() {
            return;
        }
        if let Some((expect, line)) = self.held.pop_front() {
            self.transmit.push_back(line.into_bytes());
            self.expected.push_back(expect);
        }
    }

    fn send_command(&mut self, expect: Expect, line: &str) {
        self.transmit.push_back(line.as_bytes().to_vec());
        self.expected.push_back(expect);
    }

    fn on_reply(&mut self, reply: Reply, now: Instant) {
        let Some(expect) = self.expected.pop_front() else {
            self.fail(Failure::Unexpected);
            return;
        };
        if expect == Expect::Quit {
            self.close(None);
            return;
        }
        if reply.code == 421 {
            // RFC 5321 §3.8: the server is closing the connection.
            self.settle_and_close(&reply.clone(), Some(reply), false);
            return;
        }
        match expect {
            Expect::Greeting if reply.code == 220 => {
                let line = format!("EHLO {}\r\n", self.config.helo_name);
                self.send_command(Expect::Ehlo, &line);
            }
            Expect::Ehlo if reply.is_positive() => self.open(Extensions::from_ehlo(&reply)),
            Expect::Ehlo if reply.is_permanent() => {
                // RFC 5321 §4.1.4: an older server; fall back to HELO.
                let line = format!("HELO {}\r\n", self.config.helo_name);
                self.send_command(Expect::Helo, &line);
            }
            Expect::Helo if reply.is_positive() => self.open(Extensions::default()),
            Expect::Greeting | Expect::Ehlo | Expect::Helo => {
                // RFC 5321 §3.1: the server will not talk to us; say goodbye.
                self.settle_and_close(&reply.clone(), Some(reply), true);
                return;
            }
            Expect::Rset if reply.is_positive() => self.needs_rset = false,
            Expect::Rset => {
                self.fail(Failure::RsetRefused(reply.code));
                return;
            }
            Expect::Mail => self.on_mail_reply(reply),
            Expect::Rcpt(i) => self.on_rcpt_reply(i, reply),
            Expect::Data => self.on_data_reply(reply),
            Expect::EndOfData => {
                if self.data.is_some() {
                    // The server answered before the content was all handed out.
                    if reply.is_positive() {
                        self.fail(Failure::Unexpected);
                    } else {
                        self.data = None;
                        if let Some(txn) = &mut self.transaction {
                            txn.settle_accepted(&reply);
                        }
                        self.settle_and_close(&reply.clone(), Some(reply), false);
                    }
                    return;
                }
                if let Some(txn) = &mut self.transaction {
                    txn.settle_accepted(&reply);
                }
                self.needs_rset = false;
            }
            Expect::AbandonedData => self.needs_rset = false,
            Expect::Quit => {}
        }
        self.send_held();
        self.finish_transaction();
        self.arm(now);
    }

    fn open(&mut self, ext: Extensions) {
        self.phase = Phase::Open;
        self.extensions = Some(ext.clone());
        self.events.push_back(ClientEvent::Ready(ext));
    }

    fn on_mail_reply(&mut self, reply: Reply) {
        let Some(txn) = &mut self.transaction else {
            return;
        };
        if reply.is_positive() {
            return;
        }
        txn.mail_failed = true;
        txn.settle_unsettled(&reply);
        // Without PIPELINING nothing more is sent; with it, the RCPT and DATA replies
        // are still read and ignored.
        self.held.clear();
    }

    fn on_rcpt_reply(&mut self, i: usize, reply: Reply) {
        let Some(txn) = &mut self.transaction else {
            return;
        };
        if txn.mail_failed {
            return;
        }
        if let Some(state) = txn.rcpts.get_mut(i) {
            *state = if reply.is_positive() {
                RcptState::Accepted
            } else {
                RcptState::Done(reply)
            };
        }
        let rcpts_answered = !self.held.iter().any(|(e, _)| matches!(e, Expect::Rcpt(_)))
            && !self.expected.iter().any(|e| matches!(e, Expect::Rcpt(_)));
        if rcpts_answered && txn.accepted() == 0 {
            // No recipient: DATA is not sent (without PIPELINING).
            self.held.clear();
        }
    }

    fn on_data_reply(&mut self, reply: Reply) {
        let Some(txn) = &mut self.transaction else {
            return;
        };
        let accepted = if txn.mail_failed { 0 } else { txn.accepted() };
        if reply.code == 354 {
            if accepted > 0 {
                self.data = Some(DataStream::new(txn.msg.content.clone()));
                self.expected.push_back(Expect::EndOfData);
            } else {
                // RFC 2920 §3.1: no recipient was accepted, yet the server wants data;
                // end it at once with an empty message.
                self.send_command(Expect::AbandonedData, ".\r\n");
            }
        } else if !txn.mail_failed {
            txn.settle_accepted(&reply);
        }
    }

    /// Emits `TransactionDone` once every reply of the transaction is in.
    fn finish_transaction(&mut self) {
        if !(self.expected.is_empty() && self.held.is_empty() && self.data.is_none()) {
            return;
        }
        if let Some(txn) = self.transaction.take() {
            let unsettled = Reply::new(451, "4.5.0", "Protocol error: no reply for recipient");
            self.events
                .push_back(ClientEvent::TransactionDone(txn.into_replies(&unsettled)));
        }
    }

    fn fail(&mut self, failure: Failure) {
        let reply = failure.reply();
        self.settle_and_close(&reply, Some(reply.clone()), false);
    }

    /// Ends the transaction in flight, its unsettled recipients getting `unsettled`,
    /// then closes with `reason`, sending QUIT first if `say_quit`.
    fn settle_and_close(&mut self, unsettled: &Reply, reason: Option<Reply>, say_quit: bool) {
        if let Some(txn) = self.transaction.take() {
            self.events
                .push_back(ClientEvent::TransactionDone(txn.into_replies(unsettled)));
        }
        self.transmit.clear();
        if say_quit {
            self.transmit.push_back(b"QUIT\r\n".to_vec());
        }
        self.close(reason);
    }

    fn close(&mut self, reason: Option<Reply>) {
        self.phase = Phase::Closed;
        self.expected.clear();
        self.held.clear();
        self.data = None;
        self.deadline = None;
        self.events.push_back(ClientEvent::Closed(reason));
    }
}

/// A value fit for a command line: no control characters that could end the line or
/// smuggle another command. The queue checks this already; the wire must not trust it.
fn is_safe_on_wire(s: &str) -> bool {
    !s.bytes().any(|b| b < 0x20 || b == 0x7f)
}

/// `MAIL FROM:<…>` with the parameters the server offered (RFC 1870, 6152, 6531, 3461).
fn mail_command(msg: &OutgoingMessage, ext: &Extensions) -> String {
    let mut line = format!("MAIL FROM:<{}>", msg.from);
    // Writing to a String cannot fail.
    if ext.size.is_some() {
        let _ = write!(line, " SIZE={}", msg.content.len());
    }
    if msg.eight_bit && ext.eight_bit_mime {
        line.push_str(" BODY=8BITMIME");
    }
    if msg.smtputf8 {
        line.push_str(" SMTPUTF8");
    }
    if ext.dsn {
        if let Some(ret) = &msg.ret {
            let _ = write!(line, " RET={ret}");
        }
        if let Some(envid) = &msg.envid {
            let _ = write!(line, " ENVID={envid}");
        }
    }
    line.push_str("\r\n");
    line
}

/// `RCPT TO:<…>` with DSN parameters if the server offered DSN (RFC 3461 §4).
fn rcpt_command(rcpt: &OutgoingRcpt, ext: &Extensions) -> String {
    let mut line = format!("RCPT TO:<{}>", rcpt.address);
    if ext.dsn {
        if let Some(notify) = &rcpt.notify {
            let _ = write!(line, " NOTIFY={notify}");
        }
        if let Some(orcpt) = &rcpt.orcpt {
            let _ = write!(line, " ORCPT={orcpt}");
        }
    }
    line.push_str("\r\n");
    line
}
