//! The SMTP client core: bytes and time in; commands, events and deadlines out.
//!
//! Speaks the client side of RFC 5321 with SIZE (RFC 1870), PIPELINING (RFC 2920),
//! 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), DSN (RFC 3461) and enhanced status codes
//! (RFC 2034), STARTTLS (RFC 3207) as far as the SMTP dialogue goes: it asks for TLS
//! and says when the handshake is due, but the layer under it runs the handshake; and
//! AUTH (RFC 4954) with the SASL client of [`crate::sasl::client`]. It knows nothing
//! about sockets, TLS libraries, DNS or the queue.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::sasl::base64;
use crate::sasl::client::{
    ClientAuthError, ClientCredentials, ClientDerivation, ClientMechanism, ClientNonce, ClientStep,
    SaltedPassword, SaslClient,
};
use crate::smtp::client_reply::{ReplyError, ReplyReader};
use crate::smtp::data;
use crate::smtp::reply::Reply;

/// The largest piece of message content the layer should hand to
/// [`Client::handle_content`] at once: 64 KiB.
///
/// One piece dot-stuffed is at most twice its size (a stuffed dot or a bare CR or LF made
/// CRLF doubles an octet) plus a 2-octet line break held over from the piece before,
/// 128 KiB + 2 octets (the end of data is at most 5 more), and the
/// client takes the next piece only once that one is written (see
/// [`Client::wants_content`]), so a message is never held whole: delivery memory is this
/// bound times the connections open, whatever the message sizes.
pub const CONTENT_CHUNK: usize = 64 * 1024;

/// The form of RFC 4954's AUTH keyword that some older servers still send
/// (`AUTH=LOGIN PLAIN`): read as AUTH.
const OLD_AUTH: &str = "AUTH=";

/// Whether the client asks a next hop for TLS (SPEC §3 channel keywords, §4 outbound TLS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TlsPolicy {
    /// `notlsclient`: never send STARTTLS, even when it is offered.
    Never,
    /// `maytlsclient`: STARTTLS when offered; a refusal (4xx or 5xx) leaves the
    /// connection in clear, as RFC 3207 §4.1 allows.
    #[default]
    Opportunistic,
    /// `musttlsclient`: never send mail in clear. A next hop that does not offer
    /// STARTTLS, refuses it or fails the handshake gets no mail; the message is deferred.
    Required,
}

/// Logging in to the next hop (RFC 4954), after EHLO (under TLS when there is TLS).
#[derive(Clone, Debug)]
pub struct ClientAuth {
    pub credentials: ClientCredentials,
    /// Fresh for each connection: the SCRAM client nonce.
    pub nonce: ClientNonce,
    /// Send the credentials over a connection without TLS (`auth danger-cleartext`).
    /// Without it, a connection that has no TLS is closed before AUTH and the mail waits.
    pub allow_cleartext: bool,
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub helo_name: String,
    pub tls: TlsPolicy,
    /// Log in before any mail, or none.
    pub auth: Option<ClientAuth>,
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
            tls: TlsPolicy::Opportunistic,
            auth: None,
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

/// One transaction's envelope. The content itself is not here: the layer hands it to
/// [`Client::handle_content`] in pieces once the server has said 354.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub from: String,
    pub rcpts: Vec<OutgoingRcpt>,
    /// Octets of content the layer will hand over (CRLF lines, not dot-stuffed), for
    /// SIZE (RFC 1870).
    pub size: u64,
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
    /// The SASL mechanisms of RFC 4954's AUTH keyword that we can use, each once.
    pub auth: Vec<ClientMechanism>,
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
            // `AUTH=LOGIN PLAIN`: the first mechanism, when one follows the `=`.
            let old_auth = keyword
                .get(..OLD_AUTH.len())
                .filter(|k| k.eq_ignore_ascii_case(OLD_AUTH))
                .and_then(|_| keyword.get(OLD_AUTH.len()..))
                .filter(|m| !m.is_empty());
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
            } else if is("AUTH") || old_auth.is_some() {
                for name in old_auth.into_iter().chain(words) {
                    if let Some(m) = ClientMechanism::parse(name)
                        && !ext.auth.contains(&m)
                    {
                        ext.auth.push(m);
                    }
                }
            }
        }
        ext
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// The greeting and EHLO (or HELO) went through; `send` may be called. After
    /// STARTTLS, the extensions are those of the EHLO sent under TLS only.
    Ready(Extensions),
    /// The server accepted STARTTLS (RFC 3207 §4): the layer runs the TLS handshake over
    /// the connection, then calls `tls_established` or `tls_failed`. No bytes go out and
    /// none are read as replies until then.
    StartTls,
    /// The server said 354: the layer hands over the message content with
    /// `handle_content` while `wants_content()` is true, then calls `end_content` (or
    /// `content_failed` when it cannot read the content).
    SendContent,
    /// AUTH with SCRAM needs the salted password: the layer runs the derivation where it
    /// holds no one up and hands the result to `derived`. No bytes are owed either way
    /// until then.
    Derive(ClientDerivation),
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
    StartTls,
    /// A reply in the AUTH exchange: a 334 challenge, or the outcome.
    Auth,
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
            Expect::StartTls => "STARTTLS",
            Expect::Auth => "AUTH",
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
    /// The layer could not read the message content, for this reason. The data is left
    /// unfinished: the server must never take a cut message as complete.
    ContentUnreadable(String),
    /// The server closed the connection.
    ConnectionLost(Option<Expect>),
    /// The server's bytes are not a reply.
    Malformed(ReplyError),
    /// Bytes arrived when no reply was owed, or a positive reply before the end of data.
    Unexpected,
    /// The server refused RSET, so the next transaction cannot start clean.
    RsetRefused(u16),
    /// `TlsPolicy::Required`, but the server did not offer STARTTLS.
    TlsNotOffered,
    /// `TlsPolicy::Required`, but the server answered STARTTLS with this reply.
    TlsRefused(Reply),
    /// The layer could not complete the TLS handshake, for this reason.
    TlsHandshake(String),
    /// AUTH is configured, but the connection has no TLS and cleartext is not allowed:
    /// the credentials are not sent.
    AuthNeedsTls,
    /// AUTH is configured, but the server offers none of our mechanisms.
    AuthNotOffered,
    /// The server refused the login with this reply (a 535, say).
    AuthRefused { user: String, reply: Reply },
    /// The server broke the exchange, or did not prove itself (SCRAM).
    AuthBroken(ClientAuthError),
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
            Failure::ContentUnreadable(reason) => {
                Reply::new(451, "4.3.0", format!("Queue file read error: {reason}"))
            }
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
            // RFC 3207 §4 and RFC 3463 §3.8: 454 4.7.5, transient, so the message waits
            // for a next hop that does TLS rather than going out in clear.
            Failure::TlsNotOffered => Reply::new(
                454,
                "4.7.5",
                "TLS is required but the server does not offer STARTTLS",
            ),
            Failure::TlsRefused(reply) => Reply::new(
                454,
                "4.7.5",
                format!(
                    "TLS is required but the server refused STARTTLS: {}",
                    first_line(reply)
                ),
            ),
            Failure::TlsHandshake(reason) => {
                Reply::new(454, "4.7.5", format!("TLS handshake failed: {reason}"))
            }
            // RFC 4954 §6 and RFC 3463 §3.8: 454 4.7.0, a temporary authentication
            // failure: the mail waits for the next attempt (and a DSN after the queue
            // lifetime) rather than bouncing on a password the administrator can fix.
            Failure::AuthNeedsTls => Reply::new(
                454,
                "4.7.0",
                "Not sending the password without TLS: the next hop does not do TLS (set auth danger-cleartext to allow it)",
            ),
            Failure::AuthNotOffered => Reply::new(
                454,
                "4.7.0",
                "The next hop offers no AUTH mechanism we use (SCRAM-SHA-256, PLAIN, LOGIN)",
            ),
            Failure::AuthRefused { user, reply } => Reply::new(
                454,
                "4.7.0",
                format!("Authentication as {user} failed: {}", first_line(reply)),
            ),
            Failure::AuthBroken(e) => {
                Reply::new(454, "4.7.0", format!("Authentication failed: {e}"))
            }
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

/// Dot-stuffs message content piece by piece (RFC 5321 §4.5.2) and ends it with
/// `CRLF.CRLF`. Its state carries over between pieces, so where the content is cut makes
/// no difference to the wire.
///
/// A bare CR or LF becomes CRLF, so nothing in the content can end the data early or be
/// read differently by the server. Content not ending in a line break gets one.
#[derive(Debug)]
struct Stuffer {
    /// The next octet starts a line (a dot there is doubled).
    line_start: bool,
    /// The last octet read was a CR whose line break is not written yet.
    pending_cr: bool,
}

impl Stuffer {
    fn new() -> Stuffer {
        Stuffer {
            line_start: true,
            pending_cr: false,
        }
    }

    /// The wire form of the next piece of content: at most twice its length, plus the
    /// line break of a CR the previous piece ended with.
    fn stuff(&mut self, input: &[u8]) -> Vec<u8> {
        // Worst case: every octet doubled.
        let mut out = Vec::with_capacity(input.len().saturating_mul(2));
        let mut rest = input;
        while let Some((&b, after)) = rest.split_first() {
            // Inside a line, octets other than CR and LF go out as they are: a run of
            // them is copied whole.
            if !self.pending_cr && !self.line_start {
                let run = data::ordinary_run(rest);
                if let Some((piece, after_run)) = rest.split_at_checked(run).filter(|_| run > 0) {
                    out.extend_from_slice(piece);
                    rest = after_run;
                    continue;
                }
            }
            rest = after;
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
        out
    }

    /// The end of data: a line break the content lacked, then `.CRLF`; at most 5 octets.
    fn finish(&mut self) -> Vec<u8> {
        const LINE_BREAK: &[u8] = b"\r\n";
        const END_OF_DATA: &[u8] = b".\r\n";
        let mut out = Vec::with_capacity(LINE_BREAK.len() + END_OF_DATA.len());
        if self.pending_cr || !self.line_start {
            out.extend_from_slice(LINE_BREAK);
        }
        out.extend_from_slice(END_OF_DATA);
        self.pending_cr = false;
        self.line_start = true;
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the greeting or the EHLO/HELO reply.
    Opening,
    /// The server accepted STARTTLS; the layer runs the handshake. Nothing is read.
    Handshake,
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
/// STARTTLS (RFC 3207), by `ClientConfig::tls`: when the EHLO reply offers it, the client
/// sends `STARTTLS`; on `220` it emits `ClientEvent::StartTls` before `Ready`. The layer
/// then runs the TLS handshake over the socket, from then on feeding `handle_input` the
/// decrypted bytes and writing `poll_transmit()` through TLS, and calls
/// `tls_established(now)` or `tls_failed(reason, now)`; then it drains as in step 2. After
/// `tls_established` the client sends EHLO again and forgets the first reply
/// (RFC 3207 §4.2); `Ready` carries the new extensions and `is_tls()` is true.
///
/// Response injection (SPEC §4, the client side of CVE-2011-0411): bytes that came in
/// clear after the `220` to STARTTLS, in the same read or before `tls_established`, are
/// discarded, never read as replies. The layer must likewise drop any plaintext its own
/// buffers hold once the handshake starts.
///
/// Message content (after `ClientEvent::SendContent`): the layer reads the content in
/// pieces of at most [`CONTENT_CHUNK`] octets and, while `wants_content()` is true,
/// passes each to `handle_content(piece, now)` and writes what `poll_transmit()` gives
/// before reading the next piece; after the last piece it calls `end_content(now)`. Where
/// the pieces are cut makes no difference to the wire. A layer that cannot read the
/// content calls `content_failed(reason, now)`: the connection is closed with the data
/// unfinished, so the server never takes a cut message, and the recipients get a local
/// 451. The core cannot see when the layer finishes writing, so the data-block deadline
/// is re-armed from the `now` of the `handle_timeout` call that finds content was handed
/// over since it was armed: a stall is detected within two data-block timeouts.
/// `end_content` arms the final-dot deadline, `data_done_timeout`.
///
/// Memory: the reply reader (511 octets plus at most 64 buffered lines, see
/// [`ReplyReader`]), one stuffed piece at a time (at most 128 KiB + 7 octets), and
/// commands and states in proportion to the recipients of the message, which come from
/// our queue, never from the server.
pub struct Client {
    config: Rc<ClientConfig>,
    phase: Phase,
    reader: ReplyReader,
    /// Replies the server owes, oldest first.
    expected: VecDeque<Expect>,
    /// Commands held back until the previous reply (no PIPELINING).
    held: VecDeque<(Expect, String)>,
    /// What the server offered: `Some` from the EHLO reply on, held while STARTTLS is
    /// asked for, then what `Ready` carried. Cleared when TLS starts (RFC 3207 §4.2).
    extensions: Option<Extensions>,
    /// The TLS handshake completed: the layer carries our bytes through TLS.
    tls: bool,
    /// The AUTH exchange in progress, and then the one that succeeded.
    sasl: Option<SaslClient>,
    /// Why the login failed, once it has: the server's reply or what was wrong with the
    /// exchange, for the layer's log line.
    auth_failure: Option<String>,
    transaction: Option<Transaction>,
    /// The content is being handed over: after a 354, until `end_content`.
    data: Option<Stuffer>,
    /// Content was handed over since the deadline was last armed.
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
            tls: false,
            sasl: None,
            auth_failure: None,
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
    ///
    /// While the TLS handshake is due (after `ClientEvent::StartTls`, before
    /// `tls_established`) bytes are discarded: they came in clear and may be injected.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        let mut input = bytes;
        while !input.is_empty() && !matches!(self.phase, Phase::Closed | Phase::Handshake) {
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
            Phase::Opening | Phase::Handshake | Phase::Open => {
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
        let local = if ext.size.is_some_and(|limit| limit > 0 && msg.size > limit) {
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
        for (i, (rcpt, state)) in txn.msg.rcpts.iter().zip(&txn.rcpts).enumerate() {
            if *state == RcptState::Pending {
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
            Phase::Opening | Phase::Handshake => self.close(None),
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

    /// True once `tls_established` was called after STARTTLS: every byte since goes
    /// through TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The layer completed the TLS handshake after `ClientEvent::StartTls`. The client
    /// forgets what the server said before (RFC 3207 §4.2) and sends EHLO again.
    ///
    /// Ignored unless the handshake was due.
    pub fn tls_established(&mut self, now: Instant) {
        if self.phase != Phase::Handshake {
            return;
        }
        self.tls = true;
        self.phase = Phase::Opening;
        self.reader = ReplyReader::new();
        self.extensions = None;
        let line = format!("EHLO {}\r\n", self.config.helo_name);
        self.send_command(Expect::Ehlo, &line);
        self.arm(now);
    }

    /// The layer could not complete the TLS handshake after `ClientEvent::StartTls`,
    /// for `reason` (a short text for the reply). The connection is closed without QUIT,
    /// since its state is unknown, with a transient 454 4.7.5 so the message is deferred.
    ///
    /// Ignored unless the handshake was due.
    pub fn tls_failed(&mut self, reason: &str, _now: Instant) {
        if self.phase != Phase::Handshake {
            return;
        }
        self.fail(Failure::TlsHandshake(reason.to_string()));
    }

    /// True while the client takes message content: after `ClientEvent::SendContent`,
    /// until `end_content`, and only once everything given before has been taken with
    /// `poll_transmit()`.
    pub fn wants_content(&self) -> bool {
        self.data.is_some() && self.transmit.is_empty() && self.phase != Phase::Closed
    }

    /// The next piece of message content, CRLF lines as queued, not dot-stuffed; at most
    /// [`CONTENT_CHUNK`] octets for the memory bound to hold. Ignored unless content is
    /// being sent.
    pub fn handle_content(&mut self, piece: &[u8], _now: Instant) {
        let Some(stuffer) = self.data.as_mut() else {
            return;
        };
        let out = stuffer.stuff(piece);
        if !out.is_empty() {
            self.transmit.push_back(out);
        }
        self.data_progress = true;
    }

    /// The content is complete: the end of data goes out and the final reply is awaited.
    pub fn end_content(&mut self, now: Instant) {
        let Some(mut stuffer) = self.data.take() else {
            return;
        };
        self.transmit.push_back(stuffer.finish());
        self.data_progress = true;
        self.arm(now);
    }

    /// The layer cannot read the content, for `reason`: the connection is closed without
    /// ending the data, and the recipients still unsettled get a local 451 4.3.0.
    pub fn content_failed(&mut self, reason: &str, _now: Instant) {
        if self.data.is_none() {
            return;
        }
        self.fail(Failure::ContentUnreadable(reason.to_string()));
    }

    /// The next bytes to write to the server, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
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
            | Expect::StartTls
            | Expect::Auth
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
        // RFC 5321 §4.2.1: only DATA gets an intermediate reply, and only 354. A 2xx to
        // DATA would claim delivery of content never sent.
        let fits = match expect {
            Expect::Greeting | Expect::AbandonedData | Expect::Quit => true,
            Expect::Data => reply.code == 354 || reply.is_transient() || reply.is_permanent(),
            Expect::Auth => reply.code == 334 || reply.code / 100 != 3,
            _ => reply.code / 100 != 3,
        };
        if !fits {
            self.fail(Failure::Unexpected);
            return;
        }
        match expect {
            Expect::Greeting if reply.code == 220 => {
                let line = format!("EHLO {}\r\n", self.config.helo_name);
                self.send_command(Expect::Ehlo, &line);
            }
            Expect::Ehlo if reply.is_positive() => {
                let ext = Extensions::from_ehlo(&reply);
                if !self.tls && self.config.tls != TlsPolicy::Never && ext.starttls {
                    self.extensions = Some(ext);
                    self.send_command(Expect::StartTls, "STARTTLS\r\n");
                } else if !self.tls && self.config.tls == TlsPolicy::Required {
                    self.refuse_clear(Failure::TlsNotOffered);
                    return;
                } else {
                    self.open(ext);
                    if self.phase == Phase::Closed {
                        return;
                    }
                }
            }
            Expect::Ehlo if reply.is_permanent() => {
                // RFC 5321 §4.1.4: an older server; fall back to HELO.
                let line = format!("HELO {}\r\n", self.config.helo_name);
                self.send_command(Expect::Helo, &line);
            }
            // An older server has no extensions, so no STARTTLS (RFC 3207 §4).
            Expect::Helo
                if reply.is_positive() && !self.tls && self.config.tls == TlsPolicy::Required =>
            {
                self.refuse_clear(Failure::TlsNotOffered);
                return;
            }
            Expect::Helo if reply.is_positive() => {
                self.open(Extensions::default());
                if self.phase == Phase::Closed {
                    return;
                }
            }
            Expect::StartTls if reply.code == 220 => {
                // Whatever follows the 220 in clear is discarded: `handle_input` stops
                // reading and the reader starts afresh after the handshake.
                self.phase = Phase::Handshake;
                self.reader = ReplyReader::new();
                self.extensions = None;
                self.deadline = None;
                self.events.push_back(ClientEvent::StartTls);
                return;
            }
            Expect::StartTls if reply.is_positive() => {
                // RFC 3207 §4: only 220 starts TLS; the server's state is unknown.
                self.fail(Failure::Unexpected);
                return;
            }
            Expect::StartTls if self.config.tls == TlsPolicy::Required => {
                self.refuse_clear(Failure::TlsRefused(reply));
                return;
            }
            Expect::StartTls => {
                // RFC 3207 §4.1: a refusal leaves the session in clear, as it was.
                let ext = self.extensions.take().unwrap_or_default();
                self.open(ext);
                if self.phase == Phase::Closed {
                    return;
                }
            }
            Expect::Auth => self.on_auth_reply(reply),
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

    /// EHLO (or HELO) is through: log in first where the configuration says so, then
    /// say `Ready`.
    fn open(&mut self, ext: Extensions) {
        let Some(auth) = self.config.auth.clone().filter(|_| self.sasl.is_none()) else {
            self.ready(ext);
            return;
        };
        if !self.tls && !auth.allow_cleartext {
            self.auth_failed(Failure::AuthNeedsTls);
            return;
        }
        let Some(mechanism) = ClientMechanism::choose(&ext.auth) else {
            self.auth_failed(Failure::AuthNotOffered);
            return;
        };
        let mut sasl = SaslClient::new(mechanism, auth.credentials, auth.nonce);
        let line = match sasl.initial() {
            // RFC 4954 §4: an empty initial response is sent as `=`.
            Some(initial) if initial.is_empty() => format!("AUTH {} =\r\n", mechanism.name()),
            Some(initial) => format!("AUTH {} {}\r\n", mechanism.name(), base64::encode(&initial)),
            None => format!("AUTH {}\r\n", mechanism.name()),
        };
        self.sasl = Some(sasl);
        self.extensions = Some(ext);
        self.send_command(Expect::Auth, &line);
    }

    fn ready(&mut self, ext: Extensions) {
        self.phase = Phase::Open;
        self.extensions = Some(ext.clone());
        self.events.push_back(ClientEvent::Ready(ext));
    }

    /// A reply in the AUTH exchange.
    fn on_auth_reply(&mut self, reply: Reply) {
        let Some(sasl) = self.sasl.as_mut() else {
            self.fail(Failure::Unexpected);
            return;
        };
        match reply.code {
            334 => {
                // The challenge is the reply's text, base64 (RFC 4954 §4); a reader that
                // split an enhanced code off a base64 text would be wrong, so take it whole.
                let text = match reply.enhanced {
                    Some(e) => format!("{e} {}", reply.lines.join("")),
                    None => reply.lines.join(""),
                };
                let step = match base64::decode(text.trim_end().as_bytes()) {
                    Some(data) => sasl.challenge(&data),
                    None => ClientStep::Failed(ClientAuthError::Malformed),
                };
                self.auth_step(step);
            }
            235 => match sasl.succeeded() {
                Ok(()) => {
                    let ext = self.extensions.take().unwrap_or_default();
                    self.ready(ext);
                }
                Err(e) => self.auth_failed(Failure::AuthBroken(e)),
            },
            _ => {
                let user = self
                    .config
                    .auth
                    .as_ref()
                    .map(|a| a.credentials.user.clone())
                    .unwrap_or_default();
                self.auth_failed(Failure::AuthRefused { user, reply });
            }
        }
    }

    /// Carries out what the SASL client says.
    fn auth_step(&mut self, step: ClientStep) {
        match step {
            ClientStep::Respond(data) => {
                let line = format!("{}\r\n", base64::encode(&data));
                self.send_command(Expect::Auth, &line);
            }
            ClientStep::Derive(d) => {
                // Nothing is owed until `derived`: no deadline, and any input is unexpected.
                self.deadline = None;
                self.events.push_back(ClientEvent::Derive(d));
            }
            ClientStep::Failed(e) => self.auth_failed(Failure::AuthBroken(e)),
        }
    }

    /// The login failed: the connection closes (QUIT where it is sane; at once after a
    /// broken exchange, whose state is unknown) and the mail waits.
    fn auth_failed(&mut self, failure: Failure) {
        let (reason, say_quit) = match &failure {
            Failure::AuthRefused { reply, .. } => (first_line(reply), true),
            Failure::AuthBroken(e) => (e.to_string(), false),
            other => (other.reply().lines.join(" "), true),
        };
        self.auth_failure = Some(reason);
        let reply = failure.reply();
        self.settle_and_close(&reply, Some(reply.clone()), say_quit);
    }

    /// The derivation of `ClientEvent::Derive` has run: the exchange goes on. Ignored
    /// unless one was asked for.
    pub fn derived(&mut self, salted: &SaltedPassword, now: Instant) {
        let Some(sasl) = self.sasl.as_mut() else {
            return;
        };
        if self.phase != Phase::Opening || !self.expected.is_empty() {
            return;
        }
        let step = sasl.derived(salted);
        self.auth_step(step);
        self.arm(now);
    }

    /// Why the login to the next hop failed, once it has: the server's refusal (`535 …`)
    /// or what was wrong with its side of the exchange.
    pub fn auth_failure(&self) -> Option<&str> {
        self.auth_failure.as_deref()
    }

    /// The mechanism we logged in with, once the login succeeded.
    pub fn authenticated(&self) -> Option<ClientMechanism> {
        self.sasl
            .as_ref()
            .filter(|_| self.phase == Phase::Open || self.phase == Phase::Quitting)
            .map(SaslClient::mechanism)
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
                self.data = Some(Stuffer::new());
                self.expected.push_back(Expect::EndOfData);
                self.events.push_back(ClientEvent::SendContent);
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

    /// Ends a connection that is still sane but must carry no mail in clear: QUIT, then
    /// close with the failure's reply.
    fn refuse_clear(&mut self, failure: Failure) {
        let reply = failure.reply();
        self.settle_and_close(&reply, Some(reply.clone()), true);
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

/// The first line of a server's reply, for the text of a local one: the rest of a
/// multi-line reply could be 64 lines long.
fn first_line(reply: &Reply) -> String {
    let mut s = reply.code.to_string();
    if let Some(e) = reply.enhanced {
        let _ = write!(s, " {e}");
    }
    if let Some(line) = reply.lines.first() {
        s.push(' ');
        s.push_str(line);
    }
    s
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
        let _ = write!(line, " SIZE={}", msg.size);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::reply::{Enhanced, MAX_REPLY_LINES};

    /// One step of a transcript.
    #[derive(Clone, Debug)]
    enum Step {
        /// The server writes these bytes.
        Server(Vec<u8>),
        /// The client has written exactly this since the last check.
        Sent(Vec<u8>),
        /// The client has written exactly this, in one transmit, since the last check.
        SentOnce(Vec<u8>),
        /// The next event is this.
        Event(ClientEvent),
        /// `send` with this envelope; at the 354 the driver hands over this content.
        Send(OutgoingMessage, Vec<u8>),
        Quit,
        Eof,
        /// The clock moves on this many seconds; `handle_timeout` runs if a deadline passed.
        Wait(u64),
        /// `poll_timeout()` is this many seconds after the start, or `None`.
        Deadline(Option<u64>),
        Ready(bool),
        Closed(bool),
        /// `is_tls()` is this.
        Tls(bool),
        /// The layer completed the TLS handshake.
        TlsEstablished,
        /// The layer failed the TLS handshake for this reason.
        TlsFailed(&'static str),
        /// These bytes were never written, in all the client's output so far.
        NeverSent(&'static [u8]),
        /// The next event is a SCRAM derivation: the layer runs it and hands it back.
        RunDerivation,
    }
    use Step::*;

    fn s(bytes: &[u8]) -> Step {
        Server(bytes.to_vec())
    }

    fn c(bytes: &[u8]) -> Step {
        Sent(bytes.to_vec())
    }

    fn c1(bytes: &[u8]) -> Step {
        SentOnce(bytes.to_vec())
    }

    /// Parses one reply written as on the wire.
    fn r(wire: &str) -> Reply {
        let mut reader = ReplyReader::new();
        let mut input = wire.as_bytes();
        let reply = reader.read(&mut input).unwrap().unwrap();
        assert!(input.is_empty());
        reply
    }

    fn done(replies: &[&str]) -> Step {
        Event(ClientEvent::TransactionDone(
            replies.iter().map(|w| r(w)).collect(),
        ))
    }

    fn closed(reply: Option<&str>) -> Step {
        Event(ClientEvent::Closed(reply.map(r)))
    }

    /// `Send` of a message and its content.
    fn send((m, content): (OutgoingMessage, Vec<u8>)) -> Step {
        Send(m, content)
    }

    fn msg(from: &str, rcpts: &[&str], content: &[u8]) -> (OutgoingMessage, Vec<u8>) {
        let m = OutgoingMessage {
            from: from.into(),
            rcpts: rcpts
                .iter()
                .map(|a| OutgoingRcpt {
                    address: a.to_string(),
                    notify: None,
                    orcpt: None,
                })
                .collect(),
            size: content.len() as u64,
            eight_bit: false,
            smtputf8: false,
            ret: None,
            envid: None,
        };
        (m, content.to_vec())
    }

    fn config() -> Rc<ClientConfig> {
        Rc::new(ClientConfig {
            helo_name: "gw.example.net".into(),
            ..ClientConfig::default()
        })
    }

    fn config_tls(tls: TlsPolicy) -> Rc<ClientConfig> {
        Rc::new(ClientConfig {
            helo_name: "gw.example.net".into(),
            tls,
            ..ClientConfig::default()
        })
    }

    /// How server writes are cut before they reach `handle_input`.
    #[derive(Clone, Copy, Debug)]
    enum Feed {
        Whole,
        ByteAtATime,
        SplitAt(usize),
    }

    struct Driver {
        client: Client,
        start: Instant,
        now: Instant,
        out: Vec<Vec<u8>>,
        /// Everything the client wrote, checked or not.
        all_out: Vec<u8>,
        events: VecDeque<ClientEvent>,
        /// The content of the message last sent, handed over at its 354.
        content: Option<Vec<u8>>,
        /// How the content is cut into pieces, as the server's writes are.
        feed: Feed,
    }

    impl Driver {
        fn drain(&mut self) {
            self.take_transmits();
            while let Some(event) = self.client.poll_event() {
                if event == ClientEvent::SendContent {
                    self.hand_over_content();
                } else {
                    self.events.push_back(event);
                }
            }
        }

        fn take_transmits(&mut self) {
            while let Some(out) = self.client.poll_transmit() {
                self.all_out.extend_from_slice(&out);
                self.out.push(out);
            }
        }

        /// What a layer does at `SendContent`: the content piece by piece, each piece's
        /// output written before the next, then the end of data.
        fn hand_over_content(&mut self) {
            let content = self.content.take().unwrap_or_default();
            let pieces: Vec<&[u8]> = match self.feed {
                Feed::Whole => vec![&content[..]],
                Feed::ByteAtATime => content.chunks(1).collect(),
                Feed::SplitAt(i) if i < content.len() => vec![&content[..i], &content[i..]],
                Feed::SplitAt(_) => vec![&content[..]],
            };
            for piece in pieces {
                if !self.client.wants_content() {
                    return;
                }
                self.client.handle_content(piece, self.now);
                self.take_transmits();
            }
            if self.client.wants_content() {
                self.client.end_content(self.now);
                self.take_transmits();
            }
        }
    }

    fn run_with(steps: &[Step], feed: Feed, config: &Rc<ClientConfig>) {
        let start = Instant::now();
        let mut d = Driver {
            client: Client::new(config.clone(), start),
            start,
            now: start,
            out: Vec::new(),
            all_out: Vec::new(),
            events: VecDeque::new(),
            content: None,
            feed,
        };
        d.drain();
        for (n, step) in steps.iter().enumerate() {
            let at = format!("step {n} {step:?} fed {feed:?}");
            match step {
                Server(bytes) => {
                    let pieces: Vec<&[u8]> = match feed {
                        Feed::Whole => vec![bytes],
                        Feed::ByteAtATime => bytes.chunks(1).collect(),
                        Feed::SplitAt(i) if i < bytes.len() => vec![&bytes[..i], &bytes[i..]],
                        Feed::SplitAt(_) => vec![bytes],
                    };
                    for piece in pieces {
                        d.client.handle_input(piece, d.now);
                        d.drain();
                    }
                }
                Sent(want) => {
                    let got = d.out.concat();
                    assert_eq!(
                        String::from_utf8_lossy(&got),
                        String::from_utf8_lossy(want),
                        "{at}"
                    );
                    d.out.clear();
                }
                SentOnce(want) => {
                    assert_eq!(d.out.len(), 1, "{at}: {:?}", d.out);
                    assert_eq!(
                        String::from_utf8_lossy(&d.out[0]),
                        String::from_utf8_lossy(want),
                        "{at}"
                    );
                    d.out.clear();
                }
                Event(want) => assert_eq!(d.events.pop_front().as_ref(), Some(want), "{at}"),
                Send(m, content) => {
                    d.content = Some(content.clone());
                    d.client.send(m.clone(), d.now);
                    d.drain();
                }
                Quit => {
                    d.client.quit(d.now);
                    d.drain();
                }
                Eof => {
                    d.client.handle_eof(d.now);
                    d.drain();
                }
                Wait(secs) => {
                    d.now += Duration::from_secs(*secs);
                    if d.client.poll_timeout().is_some_and(|t| t <= d.now) {
                        d.client.handle_timeout(d.now);
                        d.drain();
                    }
                }
                Deadline(want) => {
                    let want = want.map(|secs| d.start + Duration::from_secs(secs));
                    assert_eq!(d.client.poll_timeout(), want, "{at}");
                }
                Ready(want) => assert_eq!(d.client.is_ready(), *want, "{at}"),
                Closed(want) => assert_eq!(d.client.is_closed(), *want, "{at}"),
                Tls(want) => assert_eq!(d.client.is_tls(), *want, "{at}"),
                TlsEstablished => {
                    d.client.tls_established(d.now);
                    d.drain();
                }
                TlsFailed(reason) => {
                    d.client.tls_failed(reason, d.now);
                    d.drain();
                }
                NeverSent(bytes) => assert!(
                    !d.all_out.windows(bytes.len()).any(|w| w == *bytes),
                    "{at}: {:?}",
                    String::from_utf8_lossy(&d.all_out)
                ),
                RunDerivation => {
                    let Some(ClientEvent::Derive(derivation)) = d.events.pop_front() else {
                        panic!("{at}: no derivation asked for");
                    };
                    assert_eq!(d.client.poll_timeout(), None, "{at}: nothing is owed");
                    d.client.derived(&derivation.run(), d.now);
                    d.drain();
                }
            }
        }
        assert!(
            d.out.is_empty(),
            "unchecked output {:?} fed {feed:?}",
            d.out
        );
        assert!(
            d.events.is_empty(),
            "unchecked events {:?} fed {feed:?}",
            d.events
        );
    }

    /// Runs a transcript with server writes fed whole, a byte at a time and split at
    /// every index: the result must not change.
    fn run(steps: &[Step]) {
        run_config(steps, &config());
    }

    /// As `run`, with this configuration.
    fn run_config(steps: &[Step], config: &Rc<ClientConfig>) {
        run_with(steps, Feed::Whole, config);
        run_with(steps, Feed::ByteAtATime, config);
        let longest = steps
            .iter()
            .map(|s| match s {
                Server(b) | Send(_, b) => b.len(),
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        for i in 0..=longest {
            run_with(steps, Feed::SplitAt(i), config);
        }
    }

    const GREETING: &[u8] = b"220 mx.example.org ESMTP\r\n";
    const EHLO: &[u8] = b"EHLO gw.example.net\r\n";

    fn ehlo_reply(keywords: &[&str]) -> Vec<u8> {
        let mut lines = vec!["mx.example.org".to_string()];
        lines.extend(keywords.iter().map(|k| k.to_string()));
        Reply::plain(250, lines).to_wire()
    }

    /// Greeting and EHLO with these keywords, ending `Ready`.
    fn opening(keywords: &[&str]) -> Vec<Step> {
        let reply = ehlo_reply(keywords);
        let ext = Extensions::from_ehlo(&r(std::str::from_utf8(&reply).unwrap()));
        vec![
            Deadline(Some(300)),
            Ready(false),
            s(GREETING),
            c(EHLO),
            Server(reply),
            Event(ClientEvent::Ready(ext)),
            Ready(true),
            Deadline(None),
        ]
    }

    fn with(mut head: Vec<Step>, tail: Vec<Step>) -> Vec<Step> {
        head.extend(tail);
        head
    }

    #[test]
    fn pipelined_happy_path_sends_one_group() {
        run(&with(
            opening(&["PIPELINING", "SIZE 10000", "8BITMIME", "ENHANCEDSTATUSCODES"]),
            vec![
                send(msg("a@example.net", &["b@example.org", "c@example.org"], b"Subject: x\r\n\r\nhi\r\n")),
                Ready(false),
                c1(b"MAIL FROM:<a@example.net> SIZE=18\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n"),
                s(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 Go ahead\r\n"),
                c(b"Subject: x\r\n\r\nhi\r\n.\r\n"),
                s(b"250 2.0.0 Queued as 1234\r\n"),
                done(&["250 2.0.0 Queued as 1234\r\n", "250 2.0.0 Queued as 1234\r\n"]),
                Ready(true),
                Quit,
                c(b"QUIT\r\n"),
                Ready(false),
                s(b"221 2.0.0 Bye\r\n"),
                closed(None),
                Closed(true),
                Deadline(None),
            ],
        ));
    }

    #[test]
    fn lock_step_without_pipelining() {
        run(&with(
            opening(&["SIZE", "8BITMIME"]),
            vec![
                send(msg("", &["b@example.org", "c@example.org"], b"hi\r\n")),
                c(b"MAIL FROM:<> SIZE=4\r\n"),
                s(b"250 Ok\r\n"),
                c(b"RCPT TO:<b@example.org>\r\n"),
                s(b"250 Ok\r\n"),
                c(b"RCPT TO:<c@example.org>\r\n"),
                s(b"250 Ok\r\n"),
                c(b"DATA\r\n"),
                s(b"354 Go\r\n"),
                c(b"hi\r\n.\r\n"),
                s(b"250 Done\r\n"),
                done(&["250 Done\r\n", "250 Done\r\n"]),
            ],
        ));
    }

    #[test]
    fn ehlo_refused_falls_back_to_helo() {
        run(&[
            s(GREETING),
            c(EHLO),
            s(b"502 5.5.1 Command not implemented\r\n"),
            c(b"HELO gw.example.net\r\n"),
            Ready(false),
            s(b"250 mx.example.org\r\n"),
            Event(ClientEvent::Ready(Extensions::default())),
            Ready(true),
            Send(
                OutgoingMessage {
                    eight_bit: true,
                    ..msg("a@x", &["b@y"], b"x\r\n").0
                },
                b"x\r\n".to_vec(),
            ),
            c(b"MAIL FROM:<a@x>\r\n"),
            s(b"250 ok\r\n"),
            c(b"RCPT TO:<b@y>\r\n"),
            s(b"250 ok\r\n"),
            c(b"DATA\r\n"),
            s(b"354 go\r\n"),
            c(b"x\r\n.\r\n"),
            s(b"250 ok\r\n"),
            done(&["250 ok\r\n"]),
        ]);
    }

    #[test]
    fn helo_refused_too_ends_the_connection() {
        run(&[
            s(GREETING),
            c(EHLO),
            s(b"500 what\r\n"),
            c(b"HELO gw.example.net\r\n"),
            s(b"550 go away\r\n"),
            c(b"QUIT\r\n"),
            closed(Some("550 go away\r\n")),
            Closed(true),
            Ready(false),
        ]);
    }

    #[test]
    fn ehlo_temporary_failure_ends_the_connection() {
        run(&[
            s(GREETING),
            c(EHLO),
            s(b"451 4.3.0 later\r\n"),
            c(b"QUIT\r\n"),
            closed(Some("451 4.3.0 later\r\n")),
        ]);
    }

    #[test]
    fn refused_greeting_sends_quit() {
        run(&[
            s(b"554-5.7.1 No service\r\n554 5.7.1 for you\r\n"),
            c(b"QUIT\r\n"),
            closed(Some("554-5.7.1 No service\r\n554 5.7.1 for you\r\n")),
            Closed(true),
            // Nothing more is read.
            s(b"221 bye\r\n"),
        ]);
    }

    #[test]
    fn multi_line_greeting_and_keywords_any_case() {
        let ext = Extensions {
            esmtp: true,
            pipelining: true,
            size: Some(0),
            eight_bit_mime: true,
            smtputf8: true,
            dsn: true,
            starttls: true,
            chunking: true,
            enhanced_status_codes: true,
            auth: vec![ClientMechanism::Login, ClientMechanism::ScramSha256],
        };
        // Keyword parsing only: TLS is not asked for, so STARTTLS is merely recorded.
        run_config(
            &[
                s(b"220-mx.example.org\r\n220-welcome\r\n220 ESMTP\r\n"),
                c(EHLO),
                s(
                    b"250-mx.example.org hello\r\n250-pipelining\r\n250-Size\r\n250-8bitmime\r\n\
                250-SMTPUTF8\r\n250-DSN\r\n250-STARTTLS\r\n250-X-UNKNOWN 1 2\r\n250-CHUNKING\r\n\
                250-auth login CRAM-MD5 scram-sha-256 LOGIN\r\n250 ENHANCEDSTATUSCODES\r\n",
                ),
                Event(ClientEvent::Ready(ext)),
            ],
            &config_tls(TlsPolicy::Never),
        );
    }

    #[test]
    fn size_limit_is_checked_locally() {
        run(&with(
            opening(&["PIPELINING", "SIZE 10"]),
            vec![
                send(msg("a@x", &["b@y", "c@y"], b"0123456789X")),
                c(b""),
                done(&[
                    "552 5.3.4 Message size exceeds remote limit\r\n",
                    "552 5.3.4 Message size exceeds remote limit\r\n",
                ]),
                Ready(true),
                // Exactly at the limit goes out, with SIZE.
                send(msg("a@x", &["b@y"], b"0123456789")),
                c1(b"MAIL FROM:<a@x> SIZE=10\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
            ],
        ));
    }

    #[test]
    fn eight_bit_body_only_when_offered() {
        let m = OutgoingMessage {
            eight_bit: true,
            ..msg("a@x", &["b@y"], b"\xc3\xa9\r\n").0
        };
        run(&with(
            opening(&["PIPELINING", "8BITMIME"]),
            vec![
                Send(m.clone(), b"x\r\n".to_vec()),
                c(b"MAIL FROM:<a@x> BODY=8BITMIME\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
            ],
        ));
        run(&with(
            opening(&["PIPELINING"]),
            vec![
                Send(m, b"x\r\n".to_vec()),
                c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
            ],
        ));
    }

    #[test]
    fn smtputf8_needs_the_extension() {
        let m = OutgoingMessage {
            smtputf8: true,
            ..msg("j\u{f6}@x", &["b@y"], b"x\r\n").0
        };
        run(&with(
            opening(&["PIPELINING", "8BITMIME"]),
            vec![
                Send(m.clone(), b"x\r\n".to_vec()),
                done(&["553 5.6.7 Remote server does not support SMTPUTF8\r\n"]),
            ],
        ));
        run(&with(
            opening(&["PIPELINING", "SMTPUTF8"]),
            vec![
                Send(m, b"x\r\n".to_vec()),
                c("MAIL FROM:<j\u{f6}@x> SMTPUTF8\r\nRCPT TO:<b@y>\r\nDATA\r\n".as_bytes()),
            ],
        ));
    }

    #[test]
    fn dsn_parameters_only_when_offered() {
        let m = OutgoingMessage {
            ret: Some("HDRS".into()),
            envid: Some("QQ314159".into()),
            rcpts: vec![
                OutgoingRcpt {
                    address: "b@y".into(),
                    notify: Some("SUCCESS,FAILURE".into()),
                    orcpt: Some("rfc822;b@y".into()),
                },
                OutgoingRcpt {
                    address: "c@y".into(),
                    notify: Some("NEVER".into()),
                    orcpt: None,
                },
            ],
            ..msg("a@x", &[], b"x\r\n").0
        };
        run(&with(
            opening(&["PIPELINING", "DSN"]),
            vec![
                Send(m.clone(), b"x\r\n".to_vec()),
                c(b"MAIL FROM:<a@x> RET=HDRS ENVID=QQ314159\r\n\
                    RCPT TO:<b@y> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y\r\n\
                    RCPT TO:<c@y> NOTIFY=NEVER\r\nDATA\r\n"),
            ],
        ));
        run(&with(
            opening(&["PIPELINING"]),
            vec![
                Send(m, b"x\r\n".to_vec()),
                c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\n"),
            ],
        ));
    }

    /// A pipelined transaction of one recipient up to the 354, then `content` goes out
    /// as `wire`.
    fn data_transcript(content: &[u8], wire: &[u8]) -> Vec<Step> {
        with(
            opening(&["PIPELINING"]),
            vec![
                send(msg("a@x", &["b@y"], content)),
                c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
                s(b"250 ok\r\n250 ok\r\n354 go\r\n"),
                c(wire),
                s(b"250 ok\r\n"),
                done(&["250 ok\r\n"]),
            ],
        )
    }

    #[test]
    fn content_is_dot_stuffed() {
        run(&data_transcript(
            b".x\r\nmid.dle\r\n.\r\n..\r\nend\r\n",
            b"..x\r\nmid.dle\r\n..\r\n...\r\nend\r\n.\r\n",
        ));
    }

    #[test]
    fn content_gets_a_final_line_break() {
        run(&data_transcript(
            b"a\r\nno break",
            b"a\r\nno break\r\n.\r\n",
        ));
        run(&data_transcript(b"a\r\n.", b"a\r\n..\r\n.\r\n"));
        run(&data_transcript(b"", b".\r\n"));
    }

    #[test]
    fn bare_cr_and_lf_become_crlf() {
        run(&data_transcript(
            b"a\nb\rc\r\r\n.\n\r.\r",
            b"a\r\nb\r\nc\r\n\r\n..\r\n\r\n..\r\n.\r\n",
        ));
        // A smuggled end of data is stuffed, not obeyed.
        run(&data_transcript(
            b"x\n.\nMAIL FROM:<e@vil>\r\n",
            b"x\r\n..\r\nMAIL FROM:<e@vil>\r\n.\r\n",
        ));
    }

    /// A client past its greeting and EHLO (PIPELINING offered), its output drained.
    fn ready_with_pipelining() -> (Client, Instant) {
        let t0 = Instant::now();
        let mut client = Client::new(config(), t0);
        client.handle_input(GREETING, t0);
        client.handle_input(b"250-mx\r\n250 PIPELINING\r\n", t0);
        while client.poll_transmit().is_some() {}
        while client.poll_event().is_some() {}
        (client, t0)
    }

    /// The wire form of `content` handed over in these pieces.
    fn stuffed(pieces: &[&[u8]]) -> Vec<u8> {
        let mut stuffer = Stuffer::new();
        let mut wire = Vec::new();
        for piece in pieces {
            let out = stuffer.stuff(piece);
            assert!(out.len() <= 2 * piece.len() + 2);
            wire.extend_from_slice(&out);
        }
        let end = stuffer.finish();
        assert!(end.len() <= 5);
        wire.extend_from_slice(&end);
        wire
    }

    #[test]
    fn content_cut_anywhere_gives_the_same_wire() {
        let cases: &[&[u8]] = &[
            b".x\r\nmid.dle\r\n.\r\n..\r\nend\r\n",
            b"a\nb\rc\r\r\n.\n\r.\r",
            b"x\n.\nMAIL FROM:<e@vil>\r\n",
            b"abcdefghijklmnopqrstuvwxyz.0123\r\n.abcdefgh\0ijklmnop\rqrst..\nuvwxyz.........\n",
            b"\r\n.\r\n.",
            b"no line break at the end",
            b"\r",
            b".",
            b"",
        ];
        for content in cases {
            let whole = stuffed(&[content]);
            for i in 0..=content.len() {
                assert_eq!(
                    stuffed(&[&content[..i], &content[i..]]),
                    whole,
                    "{content:?} at {i}"
                );
                for j in i..=content.len() {
                    let three = stuffed(&[&content[..i], &content[i..j], &content[j..]]);
                    assert_eq!(three, whole, "{content:?} at {i} and {j}");
                }
            }
            let bytes: Vec<&[u8]> = content.chunks(1).collect();
            assert_eq!(stuffed(&bytes), whole, "{content:?} byte by byte");
        }
    }

    #[test]
    fn large_content_goes_out_piece_by_piece() {
        let mut content = Vec::new();
        while content.len() < 3 * CONTENT_CHUNK {
            content.extend_from_slice(b".line of text\r\n");
        }
        let pieces: Vec<&[u8]> = content.chunks(CONTENT_CHUNK).collect();
        assert_eq!(pieces.len(), 4);
        let wire = stuffed(&pieces);
        let mut want = Vec::new();
        for line in content.split_inclusive(|&b| b == b'\n') {
            want.push(b'.');
            want.extend_from_slice(line);
        }
        want.extend_from_slice(b".\r\n");
        assert_eq!(wire, want);
    }

    #[test]
    fn crlf_cut_between_pieces_stays_one_line_break() {
        let mut first = vec![b'x'; 10];
        first.push(b'\r');
        let mut stuffer = Stuffer::new();
        let out = stuffer.stuff(&first);
        assert!(!out.ends_with(b"\r"), "the CR waits for its LF");
        assert_eq!(stuffer.stuff(b"\n.y\r\n"), b"\r\n..y\r\n");
        assert_eq!(stuffer.finish(), b".\r\n");
    }

    #[test]
    fn content_is_taken_only_once_the_last_piece_is_written() {
        let (mut client, t0) = ready_with_pipelining();
        assert!(!client.wants_content());
        client.send(msg("a@x", &["b@y"], b"").0, t0);
        while client.poll_transmit().is_some() {}
        assert!(!client.wants_content(), "no content before the 354");
        client.handle_input(b"250 ok\r\n250 ok\r\n354 go\r\n", t0);
        assert_eq!(client.poll_event(), Some(ClientEvent::SendContent));
        assert!(client.wants_content());
        client.handle_content(b"a\r\n", t0);
        assert!(!client.wants_content(), "the piece is not written yet");
        assert_eq!(client.poll_transmit(), Some(b"a\r\n".to_vec()));
        assert!(client.wants_content());
        client.handle_content(b".b", t0);
        assert_eq!(client.poll_transmit(), Some(b"..b".to_vec()));
        client.end_content(t0);
        assert!(!client.wants_content());
        assert_eq!(client.poll_transmit(), Some(b"\r\n.\r\n".to_vec()));
        // Content after the end is ignored.
        client.handle_content(b"late", t0);
        assert_eq!(client.poll_transmit(), None);
        client.handle_input(b"250 ok\r\n", t0);
        assert_eq!(
            client.poll_event(),
            Some(ClientEvent::TransactionDone(vec![r("250 ok\r\n")]))
        );
    }

    #[test]
    fn unreadable_content_closes_without_ending_the_data() {
        let (mut client, t0) = ready_with_pipelining();
        client.send(msg("a@x", &["b@y", "c@y"], b"").0, t0);
        while client.poll_transmit().is_some() {}
        client.handle_input(b"250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n", t0);
        assert_eq!(client.poll_event(), Some(ClientEvent::SendContent));
        client.handle_content(b"first half\r\n", t0);
        assert_eq!(client.poll_transmit(), Some(b"first half\r\n".to_vec()));
        client.content_failed("disk on fire", t0);
        // No end of data and no QUIT: the server must see an unfinished message.
        assert_eq!(client.poll_transmit(), None);
        let local = r("451 4.3.0 Queue file read error: disk on fire\r\n");
        assert_eq!(
            client.poll_event(),
            Some(ClientEvent::TransactionDone(vec![
                local.clone(),
                r("550 no\r\n")
            ]))
        );
        assert_eq!(client.poll_event(), Some(ClientEvent::Closed(Some(local))));
        assert!(client.is_closed());
    }

    #[test]
    fn per_recipient_statuses() {
        run(&with(
            opening(&["PIPELINING", "ENHANCEDSTATUSCODES"]),
            vec![
                send(msg("a@x", &["nobody@y", "b@y"], b"x\r\n")),
                c(b"MAIL FROM:<a@x>\r\nRCPT TO:<nobody@y>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
                s(b"250 2.1.0 ok\r\n550 5.1.1 No such user\r\n250 2.1.5 ok\r\n354 go\r\n"),
                c(b"x\r\n.\r\n"),
                s(b"250 2.0.0 queued\r\n"),
                done(&["550 5.1.1 No such user\r\n", "250 2.0.0 queued\r\n"]),
                Ready(true),
            ],
        ));
    }

    #[test]
    fn all_recipients_refused_sends_no_content() {
        run(&with(
            opening(&["PIPELINING"]),
            vec![
                send(msg("a@x", &["b@y", "c@y"], b"secret\r\n")),
                c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\n"),
                s(b"250 ok\r\n550 no\r\n450 later\r\n554 5.5.1 No valid recipients\r\n"),
                c(b""),
                done(&["550 no\r\n", "450 later\r\n"]),
                Ready(true),
                // The next transaction starts clean.
                send(msg("a@x", &["d@y"], b"x\r\n")),
                c1(b"RSET\r\nMAIL FROM:<a@x>\r\nRCPT TO:<d@y>\r\nDATA\r\n"),
                s(b"250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
                c(b"x\r\n.\r\n"),
                s(b"250 ok\r\n"),
                done(&["250 ok\r\n"]),
                // A completed DATA needs no RSET.
                send(msg("a@x", &["e@y"], b"x\r\n")),
                c(b"MAIL FROM:<a@x>\r\nRCPT TO:<e@y>\r\nDATA\r\n"),
            ],
        ));
    }

    #[test]
    fn all_recipients_refused_but_data_accepted_is_ended_with_a_dot() {
        run(&with(
            opening(&["PIPELINING"]),
            vec![
                send(msg("a@x", &["b@y"], b"secret\r\n")),
                c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
                s(b"250 ok\r\n550 no\r\n354 go\r\n"),
                c(b".\r\n"),
                Ready(false),
                s(b"554 no valid recipients\r\n"),
                done(&["550 no\r\n"]),
                Ready(true),
                send(msg("a@x", &["c@y"], b"x\r\n")),
                c(b"MAIL FROM:<a@x>\r\nRCPT TO:<c@y>\r\nDATA\r\n"),
            ],
        ));
    }

    #[test]
    fn all_recipients_refused_without_pipelining_skips_data() {
        run(&with(
            opening(&[]),
            vec![
                send(msg("a@x", &["b@y"], b"x\r\n")),
                c(b"MAIL FROM:<a@x>\r\n"),
                s(b"250 ok\r\n"),
                c(b"RCPT TO:<b@y>\r\n"),
                s(b"550 no\r\n"),
                c(b""),
                done(&["550 no\r\n"]),
                send(msg("a@x", &["c@y"], b"x\r\n")),
                c(b"RSET\r\n"),
                s(b"250 ok\r\n"),
                c(b"MAIL FROM:<a@x>\r\n"),
            ],
        ));
    }

    #[test]
    fn mail_refused_applies_to_every_recipient() {
        run(&with(
            opening(&["PIPELINING"]),
            vec![
                send(msg("a@x", &["b@y", "c@y"], b"x\r\n")),
                c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\n"),
                s(b"553 5.7.1 Sender refused\r\n503 no mail\r\n503 no mail\r\n503 no mail\r\n"),
                done(&[
                    "553 5.7.1 Sender refused\r\n",
                    "553 5.7.1 Sender refused\r\n",
                ]),
                Ready(true),
            ],
        ));
        run(&with(
            opening(&[]),
            vec![
                send(msg("a@x", &["b@y", "c@y"], b"x\r\n")),
                c(b"MAIL FROM:<a@x>\r\n"),
                s(b"451 4.3.0 try later\r\n"),
                c(b""),
                done(&["451 4.3.0 try later\r\n", "451 4.3.0 try later\r\n"]),
                Ready(true),
            ],
        ));
    }

    #[test]
    fn data_refused_applies_to_accepted_recipients() {
        run(&with(
            opening(&["PIPELINING"]),
            vec![
                send(msg("a@x", &["b@y", "c@y"], b"x\r\n")),
                c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\n"),
                s(b"250 ok\r\n250 ok\r\n550 no\r\n451 4.3.0 no data now\r\n"),
                done(&["451 4.3.0 no data now\r\n", "550 no\r\n"]),
                send(msg("a@x", &["b@y"], b"x\r\n")),
                c(b"RSET\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
            ],
        ));
    }

    #[test]
    fn final_reply_refusal_is_per_accepted_recipient() {
        run(&with(
            opening(&["PIPELINING"]),
            vec![
                send(msg("a@x", &["b@y", "c@y"], b"x\r\n")),
                c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\n"),
                s(b"250 ok\r\n250 ok\r\n452 full\r\n354 go\r\n"),
                c(b"x\r\n.\r\n"),
                s(b"554 5.7.1 spam\r\n"),
                done(&["554 5.7.1 spam\r\n", "452 full\r\n"]),
                Ready(true),
            ],
        ));
    }

    #[test]
    fn service_closing_mid_transaction() {
        run(&with(
            opening(&["PIPELINING"]),
            vec![
                send(msg("a@x", &["b@y", "c@y", "d@y"], b"x\r\n")),
                c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nRCPT TO:<d@y>\r\nDATA\r\n"),
                s(b"250 ok\r\n550 no\r\n421 4.3.2 shutting down\r\n"),
                c(b""),
                done(&["550 no\r\n", "421 4.3.2 shutting down\r\n", "421 4.3.2 shutting down\r\n"]),
                closed(Some("421 4.3.2 shutting down\r\n")),
                Closed(true),
                Deadline(None),
            ],
        ));
    }

    #[test]
    fn service_closing_while_idle_or_at_greeting() {
        run(&[s(b"421 busy\r\n"), c(b""), closed(Some("421 busy\r\n"))]);
        run(&[
            s(GREETING),
            c(EHLO),
            s(b"421 4.7.0 bye\r\n"),
            c(b""),
            closed(Some("421 4.7.0 bye\r\n")),
        ]);
    }

    #[test]
    fn connection_reuse() {
        run(&with(
            opening(&["PIPELINING"]),
            vec![
                send(msg("a@x", &["b@y"], b"one\r\n")),
                c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
                s(b"250 ok\r\n250 ok\r\n354 go\r\n"),
                c(b"one\r\n.\r\n"),
                s(b"250 first\r\n"),
                done(&["250 first\r\n"]),
                send(msg("a@x", &["c@y"], b"two\r\n")),
                c(b"MAIL FROM:<a@x>\r\nRCPT TO:<c@y>\r\nDATA\r\n"),
                s(b"250 ok\r\n250 ok\r\n354 go\r\n"),
                c(b"two\r\n.\r\n"),
                s(b"250 second\r\n"),
                done(&["250 second\r\n"]),
                send(msg("a@x", &["d@y"], b"three\r\n")),
                c(b"MAIL FROM:<a@x>\r\nRCPT TO:<d@y>\r\nDATA\r\n"),
                s(b"550 no\r\n503 a\r\n503 b\r\n"),
                done(&["550 no\r\n"]),
                send(msg("a@x", &["d@y"], b"four\r\n")),
                c(b"RSET\r\nMAIL FROM:<a@x>\r\nRCPT TO:<d@y>\r\nDATA\r\n"),
                s(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
                c(b"four\r\n.\r\n"),
                s(b"250 fourth\r\n"),
                done(&["250 fourth\r\n"]),
                Quit,
                c(b"QUIT\r\n"),
                s(b"221 bye\r\n"),
                closed(None),
            ],
        ));
    }

    #[test]
    fn refused_rset_ends_the_connection() {
        run(&with(
            opening(&["PIPELINING"]),
            vec![
                send(msg("a@x", &["b@y"], b"x\r\n")),
                c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
                s(b"250 ok\r\n550 no\r\n503 no\r\n"),
                done(&["550 no\r\n"]),
                send(msg("a@x", &["c@y"], b"x\r\n")),
                c(b"RSET\r\nMAIL FROM:<a@x>\r\nRCPT TO:<c@y>\r\nDATA\r\n"),
                s(b"502 no rset\r\n"),
                done(&["451 4.5.0 Protocol error: RSET refused with 502\r\n"]),
                closed(Some("451 4.5.0 Protocol error: RSET refused with 502\r\n")),
            ],
        ));
    }

    #[test]
    fn greeting_timeout() {
        run(&[
            Deadline(Some(300)),
            Wait(299),
            Closed(false),
            Wait(1),
            closed(Some("451 4.4.2 Timeout waiting for greeting reply\r\n")),
            Deadline(None),
        ]);
    }

    #[test]
    fn ehlo_timeout() {
        run(&[
            Wait(10),
            s(GREETING),
            c(EHLO),
            Deadline(Some(310)),
            Wait(300),
            closed(Some("451 4.4.2 Timeout waiting for EHLO reply\r\n")),
        ]);
    }

    /// A pipelined transaction of two recipients, opened at 0 s and sent at 0 s.
    fn timed(tail: Vec<Step>) -> Vec<Step> {
        with(
            with(
                opening(&["PIPELINING"]),
                vec![
                    send(msg("a@x", &["b@y", "c@y"], b"x\r\n")),
                    c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\n"),
                ],
            ),
            tail,
        )
    }

    #[test]
    fn mail_timeout() {
        let t = "451 4.4.2 Timeout waiting for MAIL reply\r\n";
        run(&timed(vec![
            Deadline(Some(300)),
            Wait(300),
            done(&[t, t]),
            closed(Some(t)),
        ]));
    }

    #[test]
    fn rcpt_timeout_keeps_settled_recipients() {
        let t = "451 4.4.2 Timeout waiting for RCPT reply\r\n";
        run(&timed(vec![
            Wait(5),
            s(b"250 ok\r\n550 no\r\n"),
            Deadline(Some(305)),
            Wait(300),
            done(&["550 no\r\n", t]),
            closed(Some(t)),
        ]));
    }

    #[test]
    fn data_initiation_timeout() {
        let t = "451 4.4.2 Timeout waiting for DATA reply\r\n";
        run(&timed(vec![
            s(b"250 ok\r\n250 ok\r\n250 ok\r\n"),
            Deadline(Some(120)),
            Wait(120),
            done(&[t, t]),
            closed(Some(t)),
        ]));
    }

    #[test]
    fn final_dot_timeout() {
        let t = "451 4.4.2 Timeout waiting for end of data reply\r\n";
        run(&timed(vec![
            s(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
            c(b"x\r\n.\r\n"),
            // The end of data arms the full final-dot timeout.
            Deadline(Some(600)),
            Wait(599),
            Closed(false),
            Wait(1),
            done(&[t, t]),
            closed(Some(t)),
        ]));
    }

    #[test]
    fn final_reply_in_time_after_rearm() {
        run(&timed(vec![
            s(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
            c(b"x\r\n.\r\n"),
            Wait(400),
            s(b"250 ok\r\n"),
            done(&["250 ok\r\n", "250 ok\r\n"]),
            Deadline(None),
            Ready(true),
        ]));
    }

    #[test]
    fn data_block_timeout_when_content_is_not_taken() {
        let (mut client, t0) = ready_with_pipelining();
        client.send(msg("a@x", &["b@y"], b"x\r\n").0, t0);
        assert!(client.poll_transmit().is_some());
        client.handle_input(b"250 ok\r\n250 ok\r\n354 go\r\n", t0);
        assert_eq!(client.poll_event(), Some(ClientEvent::SendContent));
        // The layer never hands over the content.
        let deadline = client.poll_timeout().unwrap();
        assert_eq!(deadline, t0 + Duration::from_secs(180));
        client.handle_timeout(deadline);
        let t = r("451 4.4.2 Timeout sending message data\r\n");
        assert_eq!(
            client.poll_event(),
            Some(ClientEvent::TransactionDone(vec![t.clone()]))
        );
        assert_eq!(client.poll_event(), Some(ClientEvent::Closed(Some(t))));
        assert_eq!(client.poll_transmit(), None);
        assert!(client.is_closed());
    }

    #[test]
    fn helo_and_rset_timeouts() {
        run(&[
            s(GREETING),
            c(EHLO),
            s(b"502 no\r\n"),
            c(b"HELO gw.example.net\r\n"),
            Wait(300),
            closed(Some("451 4.4.2 Timeout waiting for HELO reply\r\n")),
        ]);
        let t = "451 4.4.2 Timeout waiting for RSET reply\r\n";
        run(&with(
            opening(&[]),
            vec![
                send(msg("a@x", &["b@y"], b"x\r\n")),
                c(b"MAIL FROM:<a@x>\r\n"),
                s(b"550 no\r\n"),
                done(&["550 no\r\n"]),
                Deadline(None),
                Wait(1000),
                send(msg("a@x", &["b@y"], b"x\r\n")),
                c(b"RSET\r\n"),
                Deadline(Some(1300)),
                Wait(300),
                done(&[t]),
                closed(Some(t)),
            ],
        ));
    }

    #[test]
    fn early_timeout_call_does_nothing() {
        run(&[Wait(100), Deadline(Some(300)), Closed(false)]);
        let mut client = Client::new(config(), Instant::now());
        client.handle_timeout(Instant::now());
        assert_eq!(client.poll_event(), None);
    }

    #[test]
    fn quit_timeout_closes_quietly() {
        run(&with(
            opening(&[]),
            vec![
                Quit,
                c(b"QUIT\r\n"),
                Deadline(Some(300)),
                Wait(300),
                closed(None),
            ],
        ));
    }

    #[test]
    fn malformed_replies_are_protocol_errors() {
        for (bad, why) in [
            (
                &b"250 ok\r\n25O oops\r\n"[..],
                "reply line without a valid reply code",
            ),
            (
                b"250 ok\r\n250-a\r\n251 b\r\n",
                "multi-line reply with mixed reply codes",
            ),
            (
                b"250 ok\r\n250ok\r\n",
                "reply line without a valid reply code",
            ),
        ] {
            let e = format!("451 4.5.0 Protocol error: {why}\r\n");
            run(&timed(vec![
                s(bad),
                c(b""),
                done(&[&e, &e]),
                closed(Some(&e)),
            ]));
        }
    }

    #[test]
    fn overlong_and_endless_replies_are_protocol_errors() {
        let e = "451 4.5.0 Protocol error: reply line longer than 512 octets\r\n";
        let mut long = b"250 ".to_vec();
        long.resize(600, b'x');
        run(&timed(vec![Server(long), done(&[e, e]), closed(Some(e))]));
        let e = "451 4.5.0 Protocol error: reply with too many lines\r\n";
        let lines = b"250-x\r\n".repeat(MAX_REPLY_LINES + 1);
        run_with(
            &timed(vec![Server(lines), done(&[e, e]), closed(Some(e))]),
            Feed::Whole,
            &config(),
        );
    }

    #[test]
    fn unsolicited_replies_are_protocol_errors() {
        let e = "451 4.5.0 Protocol error: unexpected reply\r\n";
        // Only one reply is owed for EHLO.
        run(&[
            s(GREETING),
            c(EHLO),
            s(b"250 mx\r\n250 injected\r\n"),
            Event(ClientEvent::Ready(Extensions {
                esmtp: true,
                ..Extensions::default()
            })),
            c(b""),
            closed(Some(e)),
        ]);
        // After a transaction, while idle.
        run(&with(
            opening(&["PIPELINING"]),
            vec![s(b"250 stray\r\n"), closed(Some(e)), Closed(true)],
        ));
        // Extra replies after the final reply of a transaction.
        run(&with(
            opening(&["PIPELINING"]),
            vec![
                send(msg("a@x", &["b@y"], b"x\r\n")),
                c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
                s(b"250 ok\r\n250 ok\r\n354 go\r\n"),
                c(b"x\r\n.\r\n"),
                s(b"250 ok\r\n250 extra\r\n"),
                done(&["250 ok\r\n"]),
                closed(Some(e)),
            ],
        ));
    }

    #[test]
    fn multi_line_replies_with_enhanced_codes() {
        run(&timed(vec![
            s(b"250 2.1.0 ok\r\n550-5.1.1 No such user\r\n550-5.1.1 see\r\n550 5.1.1 https://x\r\n\
                250 2.1.5 ok\r\n354 go\r\n"),
            c(b"x\r\n.\r\n"),
            s(b"250-2.0.0 Queued\r\n250 2.0.0 as 42\r\n"),
            done(&[
                "550-5.1.1 No such user\r\n550-5.1.1 see\r\n550 5.1.1 https://x\r\n",
                "250-2.0.0 Queued\r\n250 2.0.0 as 42\r\n",
            ]),
        ]));
        let got = r("550-5.1.1 No such user\r\n550 5.1.1 here\r\n");
        assert_eq!(got.enhanced, Some(Enhanced::new(5, 1, 1)));
        assert_eq!(
            got.lines,
            vec!["No such user".to_string(), "here".to_string()]
        );
    }

    #[test]
    fn replies_of_the_wrong_kind_are_protocol_errors() {
        let e = "451 4.5.0 Protocol error: unexpected reply\r\n";
        // A 250 to DATA must not pass for a delivery.
        run(&timed(vec![
            s(b"250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n"),
            done(&[e, e]),
            closed(Some(e)),
        ]));
        run(&timed(vec![
            s(b"354 go\r\n"),
            done(&[e, e]),
            closed(Some(e)),
        ]));
        run(&timed(vec![
            s(b"250 ok\r\n250 ok\r\n354 go\r\n"),
            done(&[e, e]),
            closed(Some(e)),
        ]));
        run(&timed(vec![
            s(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
            c(b"x\r\n.\r\n"),
            s(b"354 again\r\n"),
            done(&[e, e]),
            closed(Some(e)),
        ]));
        run(&[s(GREETING), c(EHLO), s(b"354 what\r\n"), closed(Some(e))]);
    }

    #[test]
    fn connection_lost() {
        let e = "451 4.4.2 Connection lost while waiting for RCPT reply\r\n";
        run(&timed(vec![
            s(b"250 ok\r\n250 ok\r\n"),
            Eof,
            c(b""),
            done(&[e, e]),
            closed(Some(e)),
        ]));
        run(&[
            Eof,
            closed(Some(
                "451 4.4.2 Connection lost while waiting for greeting reply\r\n",
            )),
        ]);
        run(&with(
            opening(&[]),
            vec![Eof, closed(Some("451 4.4.2 Connection lost\r\n"))],
        ));
        run(&with(
            opening(&[]),
            vec![Quit, c(b"QUIT\r\n"), Eof, closed(None), Eof],
        ));
    }

    #[test]
    fn negative_reply_before_the_content_is_taken_ends_the_connection() {
        let (mut client, t0) = ready_with_pipelining();
        client.send(msg("a@x", &["b@y"], b"x\r\n").0, t0);
        assert!(client.poll_transmit().is_some());
        client.handle_input(b"250 ok\r\n250 ok\r\n354 go\r\n554 5.3.4 too big\r\n", t0);
        let reply = r("554 5.3.4 too big\r\n");
        assert_eq!(client.poll_transmit(), None);
        assert_eq!(client.poll_event(), Some(ClientEvent::SendContent));
        assert!(!client.wants_content());
        assert_eq!(
            client.poll_event(),
            Some(ClientEvent::TransactionDone(vec![reply.clone()]))
        );
        assert_eq!(client.poll_event(), Some(ClientEvent::Closed(Some(reply))));
    }

    #[test]
    fn quit_during_a_transaction_settles_it() {
        let e = "451 4.4.2 Delivery aborted: connection closed locally\r\n";
        run(&timed(vec![
            s(b"250 ok\r\n550 no\r\n"),
            Quit,
            c(b""),
            done(&["550 no\r\n", e]),
            closed(None),
        ]));
        run(&[
            s(GREETING),
            c(EHLO),
            Quit,
            c(b""),
            closed(None),
            Closed(true),
        ]);
    }

    #[test]
    fn unsafe_envelope_values_never_reach_the_wire() {
        let mut m = msg("a@x", &["b@y", "c@y\r\nRSET"], b"x\r\n").0;
        run(&with(
            opening(&["PIPELINING"]),
            vec![
                Send(m.clone(), b"x\r\n".to_vec()),
                c(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
                s(b"250 ok\r\n250 ok\r\n354 go\r\n"),
                c(b"x\r\n.\r\n"),
                s(b"250 ok\r\n"),
                done(&[
                    "250 ok\r\n",
                    "553 5.1.3 Bad destination mailbox address syntax\r\n",
                ]),
            ],
        ));
        m.from = "a@x>\nDATA".into();
        run(&with(
            opening(&["PIPELINING"]),
            vec![
                Send(m, b"x\r\n".to_vec()),
                c(b""),
                done(&[
                    "553 5.1.7 Bad sender address syntax\r\n",
                    "553 5.1.7 Bad sender address syntax\r\n",
                ]),
            ],
        ));
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "not ready"))]
    fn send_before_ready_fails_every_recipient() {
        let mut client = Client::new(config(), Instant::now());
        client.send(msg("a@x", &["b@y", "c@y"], b"x\r\n").0, Instant::now());
        let t = Reply::new(451, "4.3.0", "Connection not ready for a transaction");
        assert_eq!(
            client.poll_event(),
            Some(ClientEvent::TransactionDone(vec![t.clone(), t]))
        );
        assert_eq!(client.poll_transmit(), None);
    }

    /// The extensions an EHLO reply with these keywords gives.
    fn ext_of(keywords: &[&str]) -> Extensions {
        let reply = ehlo_reply(keywords);
        Extensions::from_ehlo(&r(std::str::from_utf8(&reply).unwrap()))
    }

    #[test]
    fn old_auth_form_is_read_and_a_keyword_cut_inside_a_character_is_not() {
        // `AUTHé`: a cut after five octets would fall inside the `é`.
        let ext = ext_of(&["AUTHé LOGIN", "AUTH=PLAIN SCRAM-SHA-256", "AUTH="]);
        assert_eq!(
            ext.auth,
            [ClientMechanism::Plain, ClientMechanism::ScramSha256]
        );
    }

    const STARTTLS: &[u8] = b"STARTTLS\r\n";
    const TLS_GO: &[u8] = b"220 2.0.0 Ready to start TLS\r\n";

    /// Greeting and an EHLO reply offering STARTTLS, which the client asks for.
    fn up_to_starttls() -> Vec<Step> {
        vec![
            s(GREETING),
            c(EHLO),
            Server(ehlo_reply(&["PIPELINING", "SIZE 100", "STARTTLS"])),
            c1(STARTTLS),
            Ready(false),
            Tls(false),
        ]
    }

    /// After the handshake: EHLO again, its reply, `Ready`, then one pipelined
    /// transaction and QUIT. The pre-TLS SIZE is forgotten: MAIL carries none.
    fn after_tls() -> Vec<Step> {
        vec![
            Tls(true),
            c1(EHLO),
            Deadline(Some(300)),
            Server(ehlo_reply(&["PIPELINING", "ENHANCEDSTATUSCODES"])),
            Event(ClientEvent::Ready(ext_of(&[
                "PIPELINING",
                "ENHANCEDSTATUSCODES",
            ]))),
            Ready(true),
            send(msg("a@x", &["b@y"], b"hi\r\n")),
            c1(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
            s(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go\r\n"),
            c(b"hi\r\n.\r\n"),
            s(b"250 2.0.0 Queued\r\n"),
            done(&["250 2.0.0 Queued\r\n"]),
            Quit,
            c(b"QUIT\r\n"),
            s(b"221 2.0.0 Bye\r\n"),
            closed(None),
            Tls(true),
        ]
    }

    #[test]
    fn opportunistic_starttls_then_ehlo_again() {
        let steps = with(
            up_to_starttls(),
            with(
                vec![
                    s(TLS_GO),
                    Event(ClientEvent::StartTls),
                    // The layer bounds the handshake; the core waits for no reply.
                    Deadline(None),
                    Ready(false),
                    Tls(false),
                    c(b""),
                    TlsEstablished,
                ],
                after_tls(),
            ),
        );
        run_config(&steps, &config_tls(TlsPolicy::Opportunistic));
        // The default policy is opportunistic.
        run(&steps);
        // Under `Required` the same dialogue sends mail, once under TLS.
        run_config(&steps, &config_tls(TlsPolicy::Required));
    }

    #[test]
    fn bytes_after_starttls_220_in_the_same_write_are_discarded() {
        for injected in [
            &b"220 2.0.0 Ready\r\n250-fake\r\n250 fake\r\n"[..],
            // An unfinished line must not prefix the real reply either.
            b"220 2.0.0 Ready\r\n250-fake\r\n250 fake\r\n250-PIPE",
            b"220 2.0.0 Ready\r\n500 nonsense\r\n",
        ] {
            run(&with(
                up_to_starttls(),
                with(
                    vec![
                        s(injected),
                        Event(ClientEvent::StartTls),
                        c(b""),
                        Closed(false),
                        TlsEstablished,
                    ],
                    after_tls(),
                ),
            ));
        }
    }

    #[test]
    fn bytes_arriving_before_the_handshake_ends_are_discarded() {
        run(&with(
            up_to_starttls(),
            with(
                vec![
                    s(TLS_GO),
                    Event(ClientEvent::StartTls),
                    s(b"250-fake\r\n250 fake\r\n"),
                    s(b"250 half a li"),
                    c(b""),
                    Closed(false),
                    Deadline(None),
                    TlsEstablished,
                ],
                after_tls(),
            ),
        ));
    }

    #[test]
    fn required_without_starttls_offered_sends_no_mail() {
        let refused = "454 4.7.5 TLS is required but the server does not offer STARTTLS\r\n";
        run_config(
            &[
                s(GREETING),
                c(EHLO),
                Server(ehlo_reply(&["PIPELINING", "SIZE 100"])),
                c(b"QUIT\r\n"),
                closed(Some(refused)),
                Closed(true),
                Ready(false),
                Tls(false),
                s(b"221 bye\r\n"),
                NeverSent(b"MAIL"),
                NeverSent(b"STARTTLS"),
            ],
            &config_tls(TlsPolicy::Required),
        );
        // An older server answering only HELO offers no STARTTLS either.
        run_config(
            &[
                s(GREETING),
                c(EHLO),
                s(b"502 5.5.1 Unrecognized command\r\n"),
                c(b"HELO gw.example.net\r\n"),
                s(b"250 mx.example.org\r\n"),
                c(b"QUIT\r\n"),
                closed(Some(refused)),
                Closed(true),
                NeverSent(b"MAIL"),
                NeverSent(b"STARTTLS"),
            ],
            &config_tls(TlsPolicy::Required),
        );
    }

    #[test]
    fn required_with_starttls_refused_sends_no_mail() {
        run_config(
            &with(
                up_to_starttls(),
                vec![
                    s(b"454 4.7.0 TLS not available due to temporary reason\r\n"),
                    c(b"QUIT\r\n"),
                    closed(Some(
                        "454 4.7.5 TLS is required but the server refused STARTTLS: \
                         454 4.7.0 TLS not available due to temporary reason\r\n",
                    )),
                    Closed(true),
                    Ready(false),
                    Tls(false),
                    NeverSent(b"MAIL"),
                ],
            ),
            &config_tls(TlsPolicy::Required),
        );
    }

    #[test]
    fn failed_handshake_closes_without_mail() {
        for policy in [TlsPolicy::Required, TlsPolicy::Opportunistic] {
            run_config(
                &with(
                    up_to_starttls(),
                    vec![
                        s(TLS_GO),
                        Event(ClientEvent::StartTls),
                        TlsFailed("certificate expired"),
                        // The connection is in no known state: no QUIT.
                        c(b""),
                        closed(Some(
                            "454 4.7.5 TLS handshake failed: certificate expired\r\n",
                        )),
                        Closed(true),
                        Tls(false),
                        Deadline(None),
                        // A late call changes nothing.
                        TlsEstablished,
                        c(b""),
                        Tls(false),
                        NeverSent(b"MAIL"),
                    ],
                ),
                &config_tls(policy),
            );
        }
    }

    #[test]
    fn opportunistic_with_starttls_refused_goes_on_in_clear() {
        run_config(
            &with(
                up_to_starttls(),
                vec![
                    s(b"454 4.7.0 TLS not available\r\n"),
                    Event(ClientEvent::Ready(ext_of(&[
                        "PIPELINING",
                        "SIZE 100",
                        "STARTTLS",
                    ]))),
                    Ready(true),
                    Tls(false),
                    Deadline(None),
                    send(msg("a@x", &["b@y"], b"hi\r\n")),
                    c1(b"MAIL FROM:<a@x> SIZE=4\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
                    s(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go\r\n"),
                    c(b"hi\r\n.\r\n"),
                    s(b"250 2.0.0 Queued\r\n"),
                    done(&["250 2.0.0 Queued\r\n"]),
                    NeverSent(b"EHLO gw.example.net\r\nEHLO"),
                ],
            ),
            &config_tls(TlsPolicy::Opportunistic),
        );
    }

    #[test]
    fn never_policy_and_helo_servers_get_no_starttls() {
        run_config(
            &[
                s(GREETING),
                c(EHLO),
                Server(ehlo_reply(&["STARTTLS"])),
                Event(ClientEvent::Ready(ext_of(&["STARTTLS"]))),
                Ready(true),
                c(b""),
                NeverSent(b"STARTTLS"),
            ],
            &config_tls(TlsPolicy::Never),
        );
        run_config(
            &[
                s(GREETING),
                c(EHLO),
                s(b"500 5.5.1 What?\r\n"),
                c(b"HELO gw.example.net\r\n"),
                s(b"250 mx.example.org\r\n"),
                Event(ClientEvent::Ready(Extensions::default())),
                Ready(true),
                Tls(false),
                NeverSent(b"STARTTLS"),
            ],
            &config_tls(TlsPolicy::Opportunistic),
        );
    }

    fn auth_config(password: &str, tls: TlsPolicy, cleartext: bool) -> Rc<ClientConfig> {
        Rc::new(ClientConfig {
            helo_name: "gw.example.net".into(),
            tls,
            auth: Some(ClientAuth {
                credentials: ClientCredentials::new("user".into(), password.into()),
                nonce: ClientNonce::parse("rOprNGfwEbeRWgbNEkqO").unwrap(),
                allow_cleartext: cleartext,
            }),
            ..ClientConfig::default()
        })
    }

    fn b64_line(text: &[u8]) -> Vec<u8> {
        format!("{}\r\n", base64::encode(text)).into_bytes()
    }

    fn reply_334(text: &[u8]) -> Vec<u8> {
        format!("334 {}\r\n", base64::encode(text)).into_bytes()
    }

    /// Greeting, STARTTLS, the handshake and EHLO under TLS with these keywords.
    fn tls_up_to_auth(keywords: &[&str]) -> Vec<Step> {
        with(
            up_to_starttls(),
            vec![
                s(b"220 2.0.0 Ready to start TLS\r\n"),
                Event(ClientEvent::StartTls),
                TlsEstablished,
                c1(EHLO),
                Server(ehlo_reply(keywords)),
            ],
        )
    }

    const SERVER_FIRST: &[u8] =
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &[u8] = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &[u8] = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    /// Up to our client-final: TLS, EHLO with `keywords`, the AUTH command with the
    /// client-first, the server-first, the derivation and our proof.
    fn scram_up_to_server_final(keywords: &[&str]) -> Vec<Step> {
        with(
            tls_up_to_auth(keywords),
            vec![
                c1(b"AUTH SCRAM-SHA-256 biwsbj11c2VyLHI9ck9wck5HZndFYmVSV2diTkVrcU8=\r\n"),
                Server(reply_334(SERVER_FIRST)),
                RunDerivation,
                c1(&b64_line(CLIENT_FINAL)),
                Deadline(Some(300)),
            ],
        )
    }

    /// RFC 7677's exchange over SMTP (RFC 4954 §4): the initial response with the
    /// command, the derivation off the core, the server-final as a challenge answered
    /// empty, then `Ready`; the strongest offered mechanism is the one used.
    #[test]
    fn scram_login_after_tls_proves_the_server() {
        let keywords = ["AUTH LOGIN PLAIN SCRAM-SHA-256", "PIPELINING"];
        let steps = with(
            scram_up_to_server_final(&keywords),
            vec![
                Server(reply_334(SERVER_FINAL)),
                c1(b"\r\n"),
                Ready(false),
                s(b"235 2.7.0 Authentication successful\r\n"),
                Event(ClientEvent::Ready(ext_of(&keywords))),
                Ready(true),
            ],
        );
        run_config(
            &steps,
            &auth_config("pencil", TlsPolicy::Opportunistic, false),
        );
    }

    #[test]
    fn a_scram_server_that_cannot_prove_itself_gets_nothing_more() {
        let unproven = "454 4.7.0 Authentication failed: the server did not prove it knows the password (SCRAM server signature)\r\n";
        // A wrong signature, or a 235 without any: the connection ends at once, with no
        // empty answer and no mail.
        for server in [
            reply_334(b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            b"235 2.7.0 Authentication successful\r\n".to_vec(),
        ] {
            let steps = with(
                scram_up_to_server_final(&["AUTH SCRAM-SHA-256"]),
                vec![Server(server), closed(Some(unproven)), Closed(true)],
            );
            run_config(
                &steps,
                &auth_config("pencil", TlsPolicy::Opportunistic, false),
            );
        }
    }

    #[test]
    fn plain_login_and_a_refusal() {
        let keywords = ["AUTH PLAIN LOGIN"];
        let mut steps = tls_up_to_auth(&keywords);
        steps.extend([
            c1(&format!("AUTH PLAIN {}\r\n", base64::encode(b"\0user\0pencil")).into_bytes()),
            s(b"235 2.7.0 Authentication successful\r\n"),
            Event(ClientEvent::Ready(ext_of(&keywords))),
            Ready(true),
        ]);
        run_config(
            &steps,
            &auth_config("pencil", TlsPolicy::Opportunistic, false),
        );
        // A 535 defers: a temporary reply naming the user and the server's words, QUIT.
        let mut steps = tls_up_to_auth(&keywords);
        steps.extend([
            c1(&format!("AUTH PLAIN {}\r\n", base64::encode(b"\0user\0wrong")).into_bytes()),
            s(b"535 5.7.8 Error: authentication failed\r\n"),
            c(b"QUIT\r\n"),
            closed(Some(
                "454 4.7.0 Authentication as user failed: 535 5.7.8 Error: authentication failed\r\n",
            )),
            Closed(true),
            NeverSent(b"MAIL"),
        ]);
        run_config(
            &steps,
            &auth_config("wrong", TlsPolicy::Opportunistic, false),
        );
    }

    #[test]
    fn login_in_clear_only_when_allowed() {
        let keywords = ["AUTH=LOGIN"];
        // Allowed: the two prompts, answered in order.
        run_config(
            &[
                s(GREETING),
                c(EHLO),
                Server(ehlo_reply(&keywords)),
                c1(b"AUTH LOGIN\r\n"),
                Server(reply_334(b"Username:")),
                c1(&b64_line(b"user")),
                Server(reply_334(b"Password:")),
                c1(&b64_line(b"pencil")),
                s(b"235 2.7.0 Authentication successful\r\n"),
                Event(ClientEvent::Ready(ext_of(&keywords))),
                Ready(true),
                Tls(false),
            ],
            &auth_config("pencil", TlsPolicy::Opportunistic, true),
        );
        // Not allowed: no AUTH, no password; QUIT and a temporary reply.
        run_config(
            &[
                s(GREETING),
                c(EHLO),
                Server(ehlo_reply(&keywords)),
                c(b"QUIT\r\n"),
                closed(Some(
                    "454 4.7.0 Not sending the password without TLS: the next hop does not do TLS (set auth danger-cleartext to allow it)\r\n",
                )),
                Closed(true),
                NeverSent(b"AUTH"),
                NeverSent(b"cGVuY2ls"),
            ],
            &auth_config("pencil", TlsPolicy::Opportunistic, false),
        );
    }

    #[test]
    fn no_usable_mechanism_defers() {
        // Only mechanisms we do not use, or no AUTH at all: QUIT, and the mail waits.
        for keywords in ["AUTH CRAM-MD5 NTLM", "PIPELINING"] {
            let steps = with(
                tls_up_to_auth(&[keywords]),
                vec![
                    c(b"QUIT\r\n"),
                    closed(Some(
                        "454 4.7.0 The next hop offers no AUTH mechanism we use (SCRAM-SHA-256, PLAIN, LOGIN)\r\n",
                    )),
                    Closed(true),
                ],
            );
            run_config(
                &steps,
                &auth_config("pencil", TlsPolicy::Opportunistic, false),
            );
        }
    }

    #[test]
    fn a_challenge_that_is_not_base64_ends_the_exchange() {
        let mut steps = tls_up_to_auth(&["AUTH LOGIN"]);
        steps.extend([
            c1(b"AUTH LOGIN\r\n"),
            s(b"334 not base64!\r\n"),
            closed(Some(
                "454 4.7.0 Authentication failed: malformed challenge\r\n",
            )),
            Closed(true),
        ]);
        run_config(
            &steps,
            &auth_config("pencil", TlsPolicy::Opportunistic, false),
        );
    }

    #[test]
    fn starttls_answered_with_another_positive_reply_ends_the_connection() {
        run(&with(
            up_to_starttls(),
            vec![
                s(b"250 2.0.0 Ok\r\n"),
                closed(Some("451 4.5.0 Protocol error: unexpected reply\r\n")),
                Closed(true),
                Tls(false),
                NeverSent(b"MAIL"),
            ],
        ));
    }

    #[test]
    fn tls_calls_outside_a_handshake_are_ignored() {
        run(&with(
            opening(&["PIPELINING"]),
            vec![
                TlsEstablished,
                TlsFailed("no handshake"),
                c(b""),
                Tls(false),
                Ready(true),
                Closed(false),
            ],
        ));
    }

    #[test]
    fn quit_or_eof_during_the_handshake_closes() {
        run(&with(
            up_to_starttls(),
            vec![
                s(TLS_GO),
                Event(ClientEvent::StartTls),
                Quit,
                c(b""),
                closed(None),
                Closed(true),
            ],
        ));
        run(&with(
            up_to_starttls(),
            vec![
                s(TLS_GO),
                Event(ClientEvent::StartTls),
                Eof,
                c(b""),
                closed(Some("451 4.4.2 Connection lost\r\n")),
            ],
        ));
    }
}
