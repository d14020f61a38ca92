//! The SMTP server session core: bytes and time in; replies, events and deadlines out.
//! **Invariant:** how the input is cut into pieces changes nothing: a transcript fed
//! whole, byte by byte or split at any index gives the same replies and events.
//!
//! RFC 5321 with PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME (RFC 6152),
//! ENHANCEDSTATUSCODES (RFC 2034, 3463), DSN (RFC 3461), SMTPUTF8 (RFC 6531) and
//! CHUNKING (RFC 3030), STARTTLS (RFC 3207) and AUTH (RFC 4954). Strict CRLF everywhere (SMTP smuggling,
//! CVE-2023-51764). The core never sees TLS itself: the layer runs the handshake and swaps
//! the byte pump under the session, then reports the outcome (see `Session`). Nor does it
//! run SASL mechanisms or know any user: it speaks the AUTH protocol and the layer answers
//! each step.
//!
//! This file holds the `Session` type with its calling order, its configuration, events
//! and public vocabulary (`handle_input`, `handle_timeout`, `poll_transmit`, `poll_event`,
//! `poll_timeout`), the command dispatcher and the replies. The rest of the session is
//! in `framing` (lines, pipelining, timeouts and deadlines), `transaction` (MAIL, RCPT,
//! DATA, BDAT, RSET and the message content), `auth` (AUTH) and `starttls` (STARTTLS),
//! each an `impl Session` block over the fields declared here. Invariant: the session
//! does no I/O and reads no clock, and every byte it writes is a reply built by `Reply`,
//! in the order of the commands it answers.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::proto::smtp::address::Recipient;
use crate::proto::smtp::command::{Command, MailParams, RcptParams, verb_of};
use crate::proto::smtp::data::{ContentChecker, DataReader};
use crate::proto::smtp::keywords::EhloKeywords;
use crate::proto::smtp::reply::Reply;

mod auth;
mod framing;
mod starttls;
mod transaction;

/// RFC 4954 §4: a server accepts at least 12288 octets in one line of an AUTH exchange,
/// without its CRLF (the same bound as `sasl::MAX_RESPONSE_LEN`). While a response line is
/// read the session buffers at most this plus the CRLF: 12290 octets per session.
pub const MAX_AUTH_LINE: usize = crate::proto::sasl::MAX_RESPONSE_LEN;

/// The settings one session runs under.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Our name in the greeting, the EHLO reply and 421 replies.
    pub host_name: String,
    /// Content octets of one message; advertised with SIZE, enforced while reading.
    pub max_message_size: u64,
    /// Accepted recipients per transaction; past it RCPT gets 452.
    pub max_recipients: u32,
    /// Longest content line, octets with its CRLF.
    pub max_line_length: u32,
    /// Quiet time allowed while waiting for a command.
    pub command_timeout: Duration,
    /// Quiet time allowed inside DATA content or a BDAT chunk.
    pub data_timeout: Duration,
    /// A command line (or AUTH response line) must be complete this long after its first
    /// octet; octets arriving do not extend it (Postfix's per-request deadline).
    pub command_deadline: Duration,
    /// Message content (DATA, or one BDAT chunk) must be complete this long after it
    /// began, plus one second per `min_data_rate` octets read.
    pub data_deadline: Duration,
    /// Octets per second of message content a client must keep up; at least 1.
    pub min_data_rate: u32,
    /// While the service is under stress (`Session::set_stress`), every timeout and
    /// deadline above is at most this.
    pub stress_timeout: Duration,
    /// Whole session, from `Session::new`.
    pub max_session_time: Duration,
    /// Messages (content ended and handed to the layer) per session; 0: no limit.
    pub max_messages: u32,
    /// Client errors before 421 and close; 0: no limit.
    pub error_limit: u32,
    /// Wait before the greeting; a client talking meanwhile is refused.
    pub greet_delay: Duration,
    /// Keywords to advertise. STARTTLS is offered only with `tls_available`, and never once
    /// TLS is active; AUTH only when some mechanism is offered (`auth_mechanisms`).
    pub ehlo_keywords: EhloKeywords,
    /// Whether STARTTLS may be offered on this connection (the layer has a certificate).
    pub tls_available: bool,
    /// Must-TLS (channel keyword `musttlsserver`, SPEC §3): without TLS, MAIL, RCPT, DATA
    /// and BDAT get `530 5.7.0`.
    pub require_tls: bool,
    /// SASL mechanisms to offer after AUTH, as advertised (`PLAIN`, `LOGIN`, `CRAM-MD5`,
    /// `SCRAM-SHA-256`, `EXTERNAL`, any case); empty: AUTH is not offered. EXTERNAL is
    /// offered only when TLS is active with a verified client certificate.
    pub auth_mechanisms: Vec<String>,
    /// Mechanisms that need TLS (a ruleset's `restrict`): not advertised before TLS, and
    /// refused with `538 5.7.11` when used then.
    pub auth_needs_tls: Vec<String>,
    /// Must-authenticate (channel keyword `mustsaslserver`, SPEC §3): until AUTH
    /// succeeds, MAIL gets `530 5.7.0 Authentication required`.
    pub require_auth: bool,
}

/// The TLS state of a session, as the layer reports it after a handshake. Plain data: the
/// core never sees a TLS library type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// For example `TLSv1.3`.
    pub version: String,
    /// For example `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// The client's certificate, when it sent one and it was verified.
    pub peer_certificate: Option<PeerCertificate>,
}

/// What the session keeps of a verified client certificate (SPEC §5: mapped to a local
/// user by SAN email, else subject CN).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The subject, RFC 4514 text (values escaped), for logs and headers.
    pub subject: String,
    /// The subject's common name, as the certificate holds it (not parsed back from
    /// `subject`, where `\,CN=` may be part of another value).
    pub common_name: Option<String>,
    pub san_emails: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub helo: String,
    pub esmtp: bool,
    pub from: String,
    pub mail_params: MailParams,
    pub rcpts: Vec<(String, RcptParams)>,
    pub size: u64,
    /// The TLS state the message was received under (for `with ESMTPS` and the cipher in
    /// the Received header); `None` in plaintext.
    pub tls: Option<TlsInfo>,
    /// The authenticated user at MAIL time (`with ESMTPA`/`ESMTPSA`); `None` when the
    /// client had not authenticated.
    pub auth_user: Option<String>,
    /// The `AUTH=` value of MAIL (`mail_params.auth`).
    pub mail_auth: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Reject(Reply),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    Quit,
    Timeout,
    /// A command line or message content did not arrive by its deadline, however many
    /// octets trickled in (a slow or slowloris client).
    TooSlow,
    TooManyErrors,
    EarlyTalker,
    SessionLimit,
    Shutdown,
    /// The TLS handshake after STARTTLS failed (`tls_failed`).
    TlsFailed,
    /// A BDAT whose size could not be read: where its chunk ends is unknown.
    UnframedChunk,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Helo {
        name: String,
        esmtp: bool,
    },
    CheckMail {
        from: String,
        params: MailParams,
    },
    /// A RCPT to decide: answer with `answer` (the recipient recorded as written) or
    /// `accept_rcpt` (recorded as the address to deliver to).
    CheckRcpt {
        to: Recipient,
        /// The path carried an RFC 5321 §4.1.1.3 source route (`@a,@b:`), dropped from
        /// `to`; policy may still refuse such paths (SPEC §3).
        had_source_route: bool,
        params: RcptParams,
    },
    MessageBegin,
    MessageData(Vec<u8>),
    /// Boxed: it comes once per message, and the layer holds an event across its waits
    /// (an unboxed transaction would make every session's state larger by its size).
    MessageEnd(Box<Transaction>),
    MessageAbort,
    /// A command was refused; `to` is the recipient of a refused RCPT when its path
    /// could be read (the `to=` of the log line).
    Rejected {
        command: String,
        to: Option<String>,
        reply: Reply,
    },
    /// The client sent a valid STARTTLS; answer with `start_tls` or `tls_unavailable`.
    StartTlsRequested,
    /// The client sent a valid AUTH for an offered mechanism: start that mechanism with
    /// `initial` (the initial response as sent: base64 text, or `=` for an empty one) and
    /// answer with `auth_challenge`, `auth_success` or `auth_failure`.
    AuthStart {
        mechanism: String,
        initial: Option<Vec<u8>>,
    },
    /// The client's line after a 334 challenge, as sent without its CRLF (base64 text, or
    /// `*` to cancel): feed it to the mechanism and answer as for `AuthStart`.
    AuthResponse(Vec<u8>),
    Closing(CloseReason),
}

/// Most octets of input kept while the session waits for `answer` or `commit_done`
/// (worst case 64 KiB per session). Pipelined commands fit many times over; a client
/// that sends more meanwhile is not following RFC 2920 §3.1. The layer should stop
/// reading while `wants_input()` is false; if it does not and the bound is passed, the
/// extra input is dropped and, once the pending reply has gone out, the session ends with
/// `421 4.7.0` and `Closing(SessionLimit)`.
pub const MAX_PENDING_INPUT: usize = 64 * 1024;

/// The session's main state.
enum Phase {
    /// Waiting `greet_delay` before the greeting; input now is an early talker.
    Greeting {
        due: Instant,
    },
    /// Reading command lines.
    Command,
    /// Reading DATA content.
    Data(DataReader),
    /// Reading a BDAT chunk of `remaining` more octets. With `refusal` the chunk is only
    /// consumed and the refusal is the reply.
    Bdat {
        remaining: u64,
        chunk: u64,
        last: bool,
        refusal: Option<Reply>,
    },
    /// A 334 challenge is out: the next line (up to `MAX_AUTH_LINE`) is the client's
    /// response.
    AuthResponse,
    /// The 334 with the server's final SASL data is out: the next line must be empty, and
    /// then `user` is authenticated.
    AuthFinal {
        user: String,
    },
    Closed,
}

/// What the session waits for from the layer.
enum Wait {
    Mail {
        from: String,
        params: MailParams,
    },
    Rcpt {
        to: String,
        params: RcptParams,
    },
    Commit {
        command: &'static str,
    },
    /// `StartTlsRequested` was given; `start_tls` or `tls_unavailable` comes next.
    StartTls,
    /// The 220 to STARTTLS is out; `tls_established` or `tls_failed` comes next. Input
    /// now is dropped, never processed (CVE-2011-0411).
    Handshake,
    /// `AuthStart` or `AuthResponse` was given; `auth_challenge`, `auth_success` or
    /// `auth_failure` comes next.
    Auth,
}

/// One SMTP server session: bytes and time in; replies, events and deadlines out.
///
/// Calling order:
/// 1. `Session::new(config, now)`.
/// 2. Loop: call `handle_input(bytes, now)` with whatever arrived from the client, and
///    `handle_timeout(now)` once the instant from `poll_timeout()` has passed.
/// 3. After every call, drain `poll_transmit()` (write all of it to the client) and
///    `poll_event()` (act on each event).
/// 4. `Event::CheckMail` and `Event::CheckRcpt` must be answered with `answer`, and
///    `Event::MessageEnd` with `commit_done`. Until then the session processes no more
///    input (it keeps it, up to `MAX_PENDING_INPUT`), so replies stay in order under
///    PIPELINING, and no timeout fires; `wants_input()` is false meanwhile.
/// 5. When `is_closed()` is true, flush what `poll_transmit()` gives and close the socket.
///
/// STARTTLS (RFC 3207), offered when `ServerConfig::tls_available`:
/// 1. A valid STARTTLS gives `Event::StartTlsRequested` and the session waits as in 4.
/// 2. The layer answers `start_tls(now)` (the 220 is queued; write it in plaintext) or
///    `tls_unavailable(now)` (454; the session goes on in plaintext).
/// 3. After `start_tls`, everything the client sent after the STARTTLS line, and whatever
///    `handle_input` gets until the next call, is dropped (CVE-2011-0411). The layer runs
///    the handshake, then calls `tls_established(info, now)`: the session is back to the
///    state after the greeting (RFC 3207 §4.2), nothing is sent, and input now is the
///    decrypted stream. On a failed handshake it calls `tls_failed(now)` and closes.
///    No timeout fires from `StartTlsRequested` until `tls_established`: the layer bounds
///    its own handshake.
///
/// A connection that is under TLS from the start (RFC 8314) begins with
/// `Session::new_tls(config, info, now)` and never offers STARTTLS.
///
/// AUTH (RFC 4954), offered when `ServerConfig::auth_mechanisms` has a mechanism usable now:
/// 1. A valid AUTH gives `Event::AuthStart` and the session waits as in 4.
/// 2. The layer runs the SASL mechanism and answers `auth_challenge(data, now)` (the
///    session sends `334 <base64>`, reads one line and gives `Event::AuthResponse`, which
///    is answered the same way), `auth_success(user, final_data, now)` (235, or with final
///    data `334 <base64>`, an empty line from the client, then 235) or
///    `auth_failure(reply, now)` (the reply; it counts towards the error limit).
/// 3. The layer may wait before answering a failure (brute-force throttling): the session
///    is paused meanwhile and no timeout fires.
/// 4. A response line over `MAX_AUTH_LINE` or badly framed ends the exchange with a 500
///    and `Event::Rejected { command: "AUTH", .. }`, with no further event: the layer
///    drops its mechanism at the next `AuthStart`.
///
/// Authentication lasts for the session; `tls_established` forgets it (RFC 3207 §4.2).
///
/// Slow clients: besides the timeouts for silence (`command_timeout`, `data_timeout`,
/// reset by every octet), a command line must be complete `command_deadline` after its
/// first octet, and message content `data_deadline` after it began plus one second per
/// `min_data_rate` octets: a client dribbling an octet at a time is cut off
/// (`Closing(TooSlow)`), one sending at the minimum rate is not. The layer calls
/// `set_stress(on)` when its service is near its connection limit: every limit is then at
/// most `stress_timeout`.
///
/// Stopping: the layer calls `shut_down(deadline, now)`; the session leaves with 421
/// once no transaction is open, and at `deadline` whatever it is doing.
///
/// The session does no I/O and never reads the clock: `now` is always an argument.
pub struct Session {
    config: Rc<ServerConfig>,
    /// The EHLO keywords advertised and accepted, before the AUTH check of `offered_now`
    /// (STARTTLS only with `tls_available` and while not under TLS).
    offered: EhloKeywords,
    /// Set once TLS is active.
    tls: Option<TlsInfo>,
    phase: Phase,
    wait: Option<Wait>,
    /// Unprocessed input: a partial command line (at most `MAX_EXTENDED_COMMAND_LINE`), or what
    /// arrived while waiting (at most `MAX_PENDING_INPUT`).
    input: Vec<u8>,
    /// Inside an over-long command line: drop input up to the next LF. Holds the verb.
    discarding: Option<String>,
    overrun: bool,
    out: Vec<u8>,
    events: VecDeque<Event>,
    /// Content read in this call, not yet given out as `MessageData`.
    data: Vec<u8>,
    helo: Option<(String, bool)>,
    mail: Option<(String, MailParams)>,
    rcpts: Vec<(String, RcptParams)>,
    /// A RCPT command was given in this transaction, accepted or not.
    rcpt_seen: bool,
    /// The content checker of a BDAT transaction that has begun (`MessageBegin` sent).
    bdat: Option<ContentChecker>,
    messages: u32,
    errors: u32,
    /// The user AUTH succeeded for.
    auth_user: Option<String>,
    start: Instant,
    last_input: Instant,
    /// When the command or AUTH line being read began; `None` between lines.
    line_started: Option<Instant>,
    /// When the message content being read (DATA, or the current BDAT chunk) began.
    data_started: Instant,
    /// Octets of that content read so far.
    data_octets: u64,
    /// The service is near its connection limit: every limit is at most
    /// `stress_timeout`.
    stressed: bool,
    /// The gateway is stopping: no new transaction begins, and by this instant the
    /// session ends whatever it is doing (see [`Session::shut_down`]).
    shutting_down: Option<Instant>,
}

/// The EHLO keywords `config` lets a session offer: STARTTLS only with a certificate
/// (`tls_available`) and never once TLS is active.
fn offered_by(config: &ServerConfig, tls_active: bool) -> EhloKeywords {
    if config.tls_available && !tls_active {
        config.ehlo_keywords
    } else {
        config.ehlo_keywords.without(EhloKeywords::STARTTLS)
    }
}

impl Session {
    pub fn new(config: Rc<ServerConfig>, now: Instant) -> Session {
        let offered = offered_by(&config, false);
        let due = now.checked_add(config.greet_delay).unwrap_or(now);
        let mut s = Session {
            config,
            offered,
            tls: None,
            phase: Phase::Greeting { due },
            wait: None,
            input: Vec::new(),
            discarding: None,
            overrun: false,
            out: Vec::new(),
            events: VecDeque::new(),
            data: Vec::new(),
            helo: None,
            mail: None,
            rcpts: Vec::new(),
            rcpt_seen: false,
            bdat: None,
            messages: 0,
            errors: 0,
            auth_user: None,
            start: now,
            last_input: now,
            line_started: None,
            data_started: now,
            data_octets: 0,
            stressed: false,
            shutting_down: None,
        };
        if due <= now {
            s.greet(now);
        }
        s
    }

    /// Starts a session on a connection that is under TLS from its first byte (RFC 8314
    /// implicit TLS): `is_tls()` is true and STARTTLS is never offered.
    pub fn new_tls(config: Rc<ServerConfig>, tls: TlsInfo, now: Instant) -> Session {
        let mut s = Session::new(config, now);
        s.offered = offered_by(&s.config, true);
        s.tls = Some(tls);
        s
    }

    /// Takes bytes from the client.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        if self.is_closed() || bytes.is_empty() {
            return;
        }
        if matches!(self.wait, Some(Wait::Handshake)) {
            // Plaintext after the 220 to STARTTLS: never processed (CVE-2011-0411).
            return;
        }
        if let Phase::Greeting { due } = self.phase {
            if now < due {
                let reply = Reply::new(554, "5.5.1", "Error: talked before greeting");
                self.reject("CONNECT", reply, false);
                self.close(CloseReason::EarlyTalker);
                return;
            }
            // The greeting timer is late, which is not the client's fault.
            self.greet(now);
        }
        self.last_input = now;
        if self.wait.is_some() {
            if self.overrun || self.input.len().saturating_add(bytes.len()) > MAX_PENDING_INPUT {
                self.overrun = true;
            } else {
                self.input.extend_from_slice(bytes);
            }
            return;
        }
        self.input.extend_from_slice(bytes);
        self.process();
        self.note_line(now);
    }

    /// Acts on the passing of time: the delayed greeting, the timeouts and deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_closed() || self.wait.is_some() {
            return;
        }
        if self.shutting_down.is_some_and(|d| now >= d) {
            self.leave(true);
            return;
        }
        if let Phase::Greeting { due } = self.phase {
            if now >= due {
                self.greet(now);
            }
        }
        let (quiet, slow) = self.phase_deadlines();
        if self.session_deadline().is_some_and(|d| now >= d) {
            self.time_out(CloseReason::SessionLimit);
        } else if slow.is_some_and(|d| now >= d) {
            self.time_out(CloseReason::TooSlow);
        } else if quiet.is_some_and(|d| now >= d) {
            self.time_out(CloseReason::Timeout);
        }
    }

    /// The service is near its connection limit (`on`), or no longer: while it is, every
    /// timeout and deadline of this session is at most `stress_timeout`, counted from the
    /// same starting points as ever. Call `poll_timeout` again after it.
    pub fn set_stress(&mut self, on: bool) {
        self.stressed = on;
    }

    /// The gateway is stopping (RFC 5321 §3.8): a session with no transaction open says
    /// `421 4.3.2` and closes (`Closing(Shutdown)`) at once, one in a transaction when it
    /// ends (its 250 or refusal goes out first, then the 421 in place of the next
    /// command's reply; QUIT still gets its 221), and every session by `deadline`, a
    /// message not yet answered aborted. Call `poll_timeout` again after it.
    pub fn shut_down(&mut self, deadline: Instant, now: Instant) {
        if self.is_closed() {
            return;
        }
        self.shutting_down = Some(deadline);
        let due = matches!(self.phase, Phase::Greeting { .. }) || now >= deadline;
        if due && self.wait.is_none() {
            self.leave(true);
        } else {
            self.leave_if_idle();
        }
    }

    /// Everything to write to the client, in order, or `None` when there is nothing.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.out.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.out))
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` should next be called; `None` while waiting for the layer
    /// or once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() || self.wait.is_some() {
            return None;
        }
        let phase = match self.phase {
            Phase::Greeting { due } => Some(due),
            _ => self.phase_deadline(),
        };
        [phase, self.session_deadline(), self.shutting_down]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// False while an event waits for `answer` or `commit_done`, and once closed: the
    /// layer may stop reading from the client meanwhile.
    pub fn wants_input(&self) -> bool {
        !self.is_closed() && self.wait.is_none()
    }

    // ---- internals ----

    fn greet(&mut self, now: Instant) {
        let text = format!("{} ESMTP drawbridge", self.config.host_name);
        self.reply(&Reply::plain(220, vec![text]));
        self.phase = Phase::Command;
        self.last_input = now;
    }

    fn command(&mut self, line: &[u8]) {
        let verb = verb_of(line);
        let command = match Command::parse(line) {
            Ok(c) => c,
            // Its chunk follows, of a size that could not be read: its octets must not
            // be read as commands (a smuggling surface behind a front end that reads BDAT
            // otherwise), and nothing says where they end. The session ends.
            Err(_) if verb == "BDAT" => {
                let reply = Reply::new(
                    554,
                    "5.5.4",
                    "Syntax: BDAT size [LAST]; where the chunk ends is unknown, closing",
                );
                self.reject(&verb, reply, false);
                return self.close(CloseReason::UnframedChunk);
            }
            Err(e) => return self.reject(&verb, e.reply(), true),
        };
        match command {
            Command::Mail { .. } | Command::Rcpt { .. } | Command::Data | Command::Bdat { .. }
                if self.config.require_tls && self.tls.is_none() =>
            {
                let refusal = Reply::new(530, "5.7.0", "Must issue a STARTTLS command first");
                match command {
                    Command::Bdat { size, last } => self.refuse_chunk(size, last, refusal),
                    _ => self.reject(&verb, refusal, true),
                }
            }
            Command::Ehlo(name) | Command::Helo(name) => {
                let esmtp = verb == "EHLO";
                self.reset_transaction();
                self.helo = Some((name.to_string(), esmtp));
                self.event(Event::Helo {
                    name: name.to_string(),
                    esmtp,
                });
                let mut lines = vec![self.config.host_name.clone()];
                if esmtp {
                    for keyword in self.advertised().names() {
                        if keyword == "SIZE" {
                            lines.push(format!("SIZE {}", self.config.max_message_size));
                        } else if keyword == "AUTH" {
                            lines.push(format!("AUTH {}", self.auth_offered().join(" ")));
                        } else {
                            lines.push(keyword.to_string());
                        }
                    }
                }
                self.reply(&Reply::plain(250, lines));
            }
            Command::Mail { path, params } => self.mail(&verb, path, &params),
            Command::Rcpt { path, params } => self.rcpt(&verb, path, &params),
            Command::Data => self.data(&verb),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => self.rset(),
            Command::Noop => self.reply(&Reply::new(250, "2.0.0", "Ok")),
            Command::Quit => {
                self.reply(&Reply::new(221, "2.0.0", "Bye"));
                self.close(CloseReason::Quit);
            }
            Command::Vrfy => self.reply(&Reply::new(
                252,
                "2.5.2",
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Command::Help => self.reply(&Reply::new(
                214,
                "2.0.0",
                "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP",
            )),
            Command::Expn => {
                self.reject(&verb, Reply::new(502, "5.5.1", "EXPN not available"), false)
            }
            Command::Starttls => self.starttls(&verb),
            Command::Auth { mechanism, initial } => self.auth(&verb, mechanism, initial),
        }
    }

    /// The keywords EHLO advertises now: AUTH only with a mechanism to offer.
    fn advertised(&self) -> EhloKeywords {
        if self.auth_offered().is_empty() {
            self.offered.without(EhloKeywords::AUTH)
        } else {
            self.offered
        }
    }

    fn esmtp(&self) -> bool {
        self.helo.as_ref().is_some_and(|(_, esmtp)| *esmtp)
    }

    /// What EHLO offered; nothing after HELO.
    fn offered_now(&self) -> EhloKeywords {
        if self.esmtp() {
            self.advertised()
        } else {
            EhloKeywords::NONE
        }
    }

    fn reply(&mut self, reply: &Reply) {
        reply.write_wire(&mut self.out);
    }

    /// Sends a 4xx/5xx reply and reports it. A client error (`counts`) moves towards the
    /// error limit; reaching it ends the session with 421 (0 means no limit).
    fn reject(&mut self, command: &str, reply: Reply, counts: bool) {
        self.refuse(command, None, reply, counts);
    }

    /// [`Self::reject`] for a recipient whose path could be read.
    fn reject_rcpt(&mut self, command: &str, to: &str, reply: Reply, counts: bool) {
        self.refuse(command, Some(to), reply, counts);
    }

    fn refuse(&mut self, command: &str, to: Option<&str>, reply: Reply, counts: bool) {
        self.reply(&reply);
        self.event(Event::Rejected {
            command: command.to_string(),
            to: to.map(str::to_string),
            reply,
        });
        if !counts || self.is_closed() {
            return;
        }
        self.errors = self.errors.saturating_add(1);
        if self.config.error_limit > 0 && self.errors >= self.config.error_limit {
            let host = &self.config.host_name;
            let reply = Reply::new(421, "4.7.0", format!("{host} Error: too many errors"));
            self.reply(&reply);
            self.event(Event::Rejected {
                command: command.to_string(),
                to: None,
                reply,
            });
            self.close(CloseReason::TooManyErrors);
        }
    }

    /// Whether a transaction is open: MAIL was accepted, or message content is being
    /// read.
    pub(super) fn in_transaction(&self) -> bool {
        self.mail.is_some()
            || self.bdat.is_some()
            || matches!(self.phase, Phase::Data(_) | Phase::Bdat { .. })
    }

    /// Shutting down with nothing in hand: leaves now. Not while the layer is being
    /// waited for, a transaction is open or an AUTH exchange runs.
    pub(super) fn leave_if_idle(&mut self) {
        // Called after every input: the test that is nearly always false comes first (a
        // closed session is not in `Phase::Command`).
        if self.shutting_down.is_some()
            && self.wait.is_none()
            && matches!(self.phase, Phase::Command)
            && !self.in_transaction()
        {
            self.leave(false);
        }
    }

    /// Says `421 4.3.2` and closes for the shutdown; `forced` when the session's time is
    /// up, whatever it was doing (a message not answered is aborted).
    pub(super) fn leave(&mut self, forced: bool) {
        let host = &self.config.host_name;
        let reply = Reply::new(421, "4.3.2", format!("{host} Service shutting down"));
        self.reply(&reply);
        if forced && self.in_transaction() {
            let command = if self.bdat.is_some() || matches!(self.phase, Phase::Bdat { .. }) {
                "BDAT"
            } else if matches!(self.phase, Phase::Data(_)) {
                "DATA"
            } else {
                "CONNECT"
            };
            self.event(Event::Rejected {
                command: command.to_string(),
                to: None,
                reply,
            });
        }
        self.close(CloseReason::Shutdown);
    }

    fn close(&mut self, reason: CloseReason) {
        if matches!(self.phase, Phase::Data(_)) || self.bdat.is_some() {
            self.bdat = None;
            self.event(Event::MessageAbort);
        }
        self.event(Event::Closing(reason));
        self.phase = Phase::Closed;
        self.wait = None;
        self.input = Vec::new();
    }

    /// Queues an event, after any content read before it.
    fn event(&mut self, event: Event) {
        self.flush_data();
        self.events.push_back(event);
    }

    fn flush_data(&mut self) {
        if !self.data.is_empty() {
            self.events
                .push_back(Event::MessageData(std::mem::take(&mut self.data)));
        }
    }
}

#[cfg(test)]
mod tests;
