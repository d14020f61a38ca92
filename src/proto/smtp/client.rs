//! The SMTP client core: bytes and time in; commands, events and deadlines out.
//! **Invariant:** how replies and content are cut into pieces changes nothing: the
//! commands, the dot-stuffed wire and the events are the same for any split.
//!
//! Speaks the client side of RFC 5321 with SIZE (RFC 1870), PIPELINING (RFC 2920),
//! 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), DSN (RFC 3461) and enhanced status codes
//! (RFC 2034), STARTTLS (RFC 3207) as far as the SMTP dialogue goes: it asks for TLS
//! and says when the handshake is due, but the layer under it runs the handshake; and
//! AUTH (RFC 4954) with the SASL client of [`crate::proto::sasl::client`]. It knows nothing
//! about sockets, TLS libraries, DNS or the queue.
//!
//! Its parts, in `client/` by responsibility: [`connection`] is the connection core
//! shared with the recipient verification client [`callout`] (greeting, EHLO/HELO,
//! replies, deadlines, command output, QUIT); [`extensions`] reads the EHLO reply;
//! `transaction` runs MAIL, RCPT and DATA, the content dot-stuffed by `stuffer`; `auth`
//! logs in; `tests` holds the transcript tests. This file holds the `Client` type, its
//! opening and STARTTLS.

mod auth;
pub mod callout;
pub mod connection;
pub mod extensions;
mod stuffer;
mod transaction;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::proto::sasl::client::{
    ClientAuthError, ClientCredentials, ClientDerivation, ClientNonce, SaslClient,
};
use crate::proto::smtp::reply::Reply;
use connection::{ClientCommand, ClientConnection, ConnectionFailure, Expect, Turn};
pub use extensions::Extensions;
use stuffer::Stuffer;
use transaction::Transaction;
pub use transaction::{OutgoingMessage, OutgoingRcpt};

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

/// A command of the delivery client: what the reply the server owes us is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
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
}

impl ClientCommand for Command {
    fn stage(self) -> &'static str {
        match self {
            Command::StartTls => "STARTTLS",
            Command::Auth => "AUTH",
            Command::Rset => "RSET",
            Command::Mail => "MAIL",
            Command::Rcpt(_) => "RCPT",
            Command::Data => "DATA",
            Command::EndOfData | Command::AbandonedData => "end of data",
        }
    }

    /// RFC 5321 §4.2.1: only DATA gets an intermediate reply, and only 354. A 2xx to
    /// DATA would claim delivery of content never sent. RFC 4954 §4: AUTH gets 334.
    fn fits(self, reply: &Reply) -> bool {
        match self {
            Command::AbandonedData => true,
            Command::Data => reply.code == 354 || reply.is_transient() || reply.is_permanent(),
            Command::Auth => reply.code == 334 || reply.code / 100 != 3,
            _ => reply.code / 100 != 3,
        }
    }
}

/// Why a connection ends early. The server's misbehaviour and silence are told apart
/// from our own misuse; each knows the reply its in-flight recipients get.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Failure {
    /// The connection failed: silence, a lost connection, or bytes that are not the reply
    /// owed.
    Connection(ConnectionFailure),
    /// RFC 5321 §4.5.3.2: a data block could not be handed out in time.
    DataBlockTimeout,
    /// The layer could not read the message content, for this reason. The data is left
    /// unfinished: the server must never take a cut message as complete.
    ContentUnreadable(String),
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

impl From<ConnectionFailure> for Failure {
    fn from(failure: ConnectionFailure) -> Failure {
        Failure::Connection(failure)
    }
}

impl Failure {
    fn reply(&self) -> Reply {
        match self {
            Failure::Connection(failure) => failure.reply(),
            Failure::DataBlockTimeout => Reply::new(451, "4.4.2", "Timeout sending message data"),
            Failure::ContentUnreadable(reason) => {
                Reply::new(451, "4.3.0", format!("Queue file read error: {reason}"))
            }
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
/// [`ReplyReader`](crate::proto::smtp::client_reply::ReplyReader)), one stuffed piece at a time
/// (at most 128 KiB + 7 octets), and commands and states in proportion to the recipients
/// of the message, which come from our queue, never from the server.
pub struct Client {
    config: Rc<ClientConfig>,
    phase: Phase,
    /// The greeting, EHLO/HELO, replies owed, commands held, bytes out and the deadline.
    conn: ClientConnection<Command>,
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
    events: VecDeque<ClientEvent>,
}

impl Client {
    /// Starts waiting for the server's greeting.
    pub fn new(config: Rc<ClientConfig>, now: Instant) -> Client {
        let mut client = Client {
            conn: ClientConnection::new(config.helo_name.clone()),
            config,
            phase: Phase::Opening,
            extensions: None,
            tls: false,
            sasl: None,
            auth_failure: None,
            transaction: None,
            data: None,
            data_progress: false,
            needs_rset: false,
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
            Some(Expect::Command(Command::EndOfData)) if self.data_progress => self.arm(now),
            Some(Expect::Command(Command::EndOfData)) if self.data.is_some() => {
                self.fail(Failure::DataBlockTimeout)
            }
            Some(expect) => self.fail(ConnectionFailure::Timeout(expect.stage())),
        }
    }

    /// The server closed the connection.
    pub fn handle_eof(&mut self, _now: Instant) {
        match self.phase {
            Phase::Closed => {}
            Phase::Quitting => self.close(None),
            Phase::Opening | Phase::Handshake | Phase::Open => {
                let stage = self.conn.owed().map(Expect::stage);
                self.fail(ConnectionFailure::ConnectionLost(stage));
            }
        }
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
                self.conn.quit();
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
        self.conn.restart_reader();
        self.extensions = None;
        self.conn.ehlo();
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

    /// The next bytes to write to the server, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.conn.poll_transmit()
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
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

    /// Arms the deadline for the reply owed first.
    fn arm(&mut self, now: Instant) {
        self.data_progress = false;
        let c = &self.config;
        let sending_content = self.data.is_some();
        self.conn.arm(now, |expect| match expect {
            Expect::Greeting => c.greeting_timeout,
            Expect::Command(Command::Data) => c.data_init_timeout,
            Expect::Command(Command::EndOfData) if sending_content => c.data_block_timeout,
            Expect::Command(Command::EndOfData) => c.data_done_timeout,
            Expect::Ehlo
            | Expect::Helo
            | Expect::Quit
            | Expect::Command(
                Command::StartTls
                | Command::Auth
                | Command::Rset
                | Command::Mail
                | Command::Rcpt(_)
                | Command::AbandonedData,
            ) => c.command_timeout,
        });
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
                self.settle_and_close(&reply.clone(), Some(reply), false);
                return;
            }
            Turn::Refused(reply) => {
                // RFC 5321 §3.1: the server will not talk to us; say goodbye.
                self.settle_and_close(&reply.clone(), Some(reply), true);
                return;
            }
            // After HELO there are no extensions, so no STARTTLS (RFC 3207 §4).
            Turn::Greeted(ext) => {
                if !self.tls && self.config.tls != TlsPolicy::Never && ext.starttls {
                    self.extensions = Some(ext);
                    self.conn.send(Command::StartTls, b"STARTTLS\r\n".to_vec());
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
            Turn::Reply(command, reply) => {
                if !self.on_reply(command, reply) {
                    return;
                }
            }
        }
        self.conn.send_held();
        self.finish_transaction();
        self.arm(now);
    }

    /// The reply to one of our commands; false when the connection is over or waits for
    /// the TLS handshake.
    fn on_reply(&mut self, command: Command, reply: Reply) -> bool {
        match command {
            Command::StartTls if reply.code == 220 => {
                // Whatever follows the 220 in clear is discarded: `handle_input` stops
                // reading and the reader starts afresh after the handshake.
                self.phase = Phase::Handshake;
                self.conn.restart_reader();
                self.extensions = None;
                self.conn.disarm();
                self.events.push_back(ClientEvent::StartTls);
                return false;
            }
            Command::StartTls if reply.is_positive() => {
                // RFC 3207 §4: only 220 starts TLS; the server's state is unknown.
                self.fail(ConnectionFailure::Unexpected);
                return false;
            }
            Command::StartTls if self.config.tls == TlsPolicy::Required => {
                self.refuse_clear(Failure::TlsRefused(reply));
                return false;
            }
            Command::StartTls => {
                // RFC 3207 §4.1: a refusal leaves the session in clear, as it was.
                let ext = self.extensions.take().unwrap_or_default();
                self.open(ext);
                if self.phase == Phase::Closed {
                    return false;
                }
            }
            Command::Auth => self.on_auth_reply(reply),
            Command::Rset if reply.is_positive() => self.needs_rset = false,
            Command::Rset => {
                self.fail(Failure::RsetRefused(reply.code));
                return false;
            }
            Command::Mail => self.on_mail_reply(reply),
            Command::Rcpt(i) => self.on_rcpt_reply(i, reply),
            Command::Data => self.on_data_reply(reply),
            Command::EndOfData => return self.on_end_of_data_reply(reply),
            Command::AbandonedData => self.needs_rset = false,
        }
        true
    }

    fn ready(&mut self, ext: Extensions) {
        self.phase = Phase::Open;
        self.extensions = Some(ext.clone());
        self.events.push_back(ClientEvent::Ready(ext));
    }

    /// Ends a connection that is still sane but must carry no mail in clear: QUIT, then
    /// close with the failure's reply.
    fn refuse_clear(&mut self, failure: Failure) {
        let reply = failure.reply();
        self.settle_and_close(&reply, Some(reply.clone()), true);
    }

    fn fail(&mut self, failure: impl Into<Failure>) {
        let reply = failure.into().reply();
        self.settle_and_close(&reply, Some(reply.clone()), false);
    }

    /// Ends the transaction in flight, its unsettled recipients getting `unsettled`,
    /// then closes with `reason`, sending QUIT first if `say_quit`.
    fn settle_and_close(&mut self, unsettled: &Reply, reason: Option<Reply>, say_quit: bool) {
        if let Some(txn) = self.transaction.take() {
            self.events
                .push_back(ClientEvent::TransactionDone(txn.into_replies(unsettled)));
        }
        self.conn.clear_transmit();
        if say_quit {
            self.conn.say_quit();
        }
        self.close(reason);
    }

    fn close(&mut self, reason: Option<Reply>) {
        self.phase = Phase::Closed;
        self.conn.close();
        self.data = None;
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

#[cfg(test)]
mod tests;
