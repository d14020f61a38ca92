//! The SMTP server session core: bytes and time in; replies, events and deadlines out.
//!
//! RFC 5321 with PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME (RFC 6152),
//! ENHANCEDSTATUSCODES (RFC 2034, 3463), DSN (RFC 3461), SMTPUTF8 (RFC 6531) and
//! CHUNKING (RFC 3030), STARTTLS (RFC 3207) and AUTH (RFC 4954). Strict CRLF everywhere (SMTP smuggling,
//! CVE-2023-51764). The core never sees TLS itself: the layer runs the handshake and swaps
//! the byte pump under the session, then reports the outcome (see `Session`). Nor does it
//! run SASL mechanisms or know any user: it speaks the AUTH protocol and the layer answers
//! each step.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::smtp::address::{Path, PathTarget, Recipient};
use crate::smtp::command::{
    Command, CommandError, LineError, MAX_COMMAND_LINE, MailParams, Param, ParamError, RcptParams,
    mail_params, rcpt_params, verb_of,
};
use crate::smtp::data::{ContentChecker, ContentError, DataReader};
use crate::smtp::keywords::EhloKeywords;
use crate::smtp::reply::Reply;

/// RFC 4954 §4: a server accepts at least 12288 octets in one line of an AUTH exchange,
/// without its CRLF (the same bound as `sasl::MAX_RESPONSE_LEN`). While a response line is
/// read the session buffers at most this plus the CRLF: 12290 octets per session.
pub const MAX_AUTH_LINE: usize = crate::sasl::MAX_RESPONSE_LEN;

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
    pub subject: String,
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
}

// `MessageEnd` is the large variant; it comes once per message, and boxing it would change
// what the layer receives.
#[allow(clippy::large_enum_variant)]
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
    MessageEnd(Transaction),
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
    /// Unprocessed input: a partial command line (at most `MAX_COMMAND_LINE`), or what
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
}

impl Session {
    pub fn new(config: Rc<ServerConfig>, now: Instant) -> Session {
        let mut offered = config.ehlo_keywords;
        if !config.tls_available {
            offered = offered.without(EhloKeywords::STARTTLS);
        }
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
        s.offered = s.offered.without(EhloKeywords::STARTTLS);
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

    /// Accepts the pending `CheckRcpt`, recording `deliver_to` as the recipient of the
    /// transaction (routing may name our host for one of our address literals). A
    /// recipient the transaction has already is answered 250 and delivered once.
    pub fn accept_rcpt(&mut self, deliver_to: String, now: Instant) {
        match self.wait.take() {
            Some(Wait::Rcpt { params, .. }) => {
                if !self.rcpts.iter().any(|(r, _)| *r == deliver_to) {
                    self.rcpts.push((deliver_to, params));
                }
                self.reply(&Reply::new(250, "2.1.5", "Ok"));
                self.resume(now);
            }
            other => {
                log::warn!("smtp server: accept_rcpt() without a pending RCPT");
                self.wait = other;
            }
        }
    }

    /// Answers the pending `CheckMail` or `CheckRcpt`.
    pub fn answer(&mut self, verdict: Verdict, now: Instant) {
        match self.wait.take() {
            Some(Wait::Mail { from, params }) => match verdict {
                Verdict::Accept => {
                    self.mail = Some((from, params));
                    self.reply(&Reply::new(250, "2.1.0", "Ok"));
                }
                Verdict::Reject(r) => self.reject("MAIL", r, false),
            },
            Some(Wait::Rcpt { to, params }) => match verdict {
                Verdict::Accept => {
                    self.rcpts.push((to, params));
                    self.reply(&Reply::new(250, "2.1.5", "Ok"));
                }
                Verdict::Reject(r) => self.reject_rcpt("RCPT", &to, r, false),
            },
            other => {
                log::warn!("smtp server: answer() without a pending check");
                self.wait = other;
                return;
            }
        }
        self.resume(now);
    }

    /// Reports the outcome of committing the message of `MessageEnd`: the queue id, or
    /// the reply to give instead.
    pub fn commit_done(&mut self, result: Result<String, Reply>, now: Instant) {
        let Some(Wait::Commit { command }) = self.wait else {
            log::warn!("smtp server: commit_done() without a pending message");
            return;
        };
        self.wait = None;
        match result {
            Ok(id) => self.reply(&Reply::new(250, "2.0.0", format!("Ok: queued as {id}"))),
            Err(r) => self.reject(command, r, false),
        }
        self.resume(now);
    }

    /// Answers `StartTlsRequested`: queues `220 2.0.0 Ready to start TLS` and drops all
    /// input after the STARTTLS line. The layer writes the 220, runs the handshake and
    /// reports with `tls_established` or `tls_failed`.
    pub fn start_tls(&mut self, now: Instant) {
        if !matches!(self.wait, Some(Wait::StartTls)) {
            log::warn!("smtp server: start_tls() without a pending STARTTLS");
            return;
        }
        self.reply(&Reply::new(220, "2.0.0", "Ready to start TLS"));
        self.forget_input();
        self.wait = Some(Wait::Handshake);
        self.last_input = now;
    }

    /// Answers `StartTlsRequested` when TLS cannot start now: `454 4.7.0`, and the session
    /// goes on in plaintext with what the client sent after STARTTLS.
    pub fn tls_unavailable(&mut self, now: Instant) {
        if !matches!(self.wait, Some(Wait::StartTls)) {
            log::warn!("smtp server: tls_unavailable() without a pending STARTTLS");
            return;
        }
        self.wait = None;
        let reply = Reply::new(454, "4.7.0", "TLS not available due to temporary reason");
        self.reject("STARTTLS", reply, false);
        self.resume(now);
    }

    /// The handshake after `start_tls` succeeded. RFC 3207 §4.2: everything learnt from
    /// the client is forgotten (HELO/EHLO and any transaction); nothing is sent, the
    /// client speaks first with a new EHLO.
    pub fn tls_established(&mut self, info: TlsInfo, now: Instant) {
        if !matches!(self.wait, Some(Wait::Handshake)) {
            log::warn!("smtp server: tls_established() without a pending handshake");
            return;
        }
        self.wait = None;
        self.forget_input();
        self.reset_transaction();
        self.helo = None;
        self.auth_user = None;
        self.offered = self.offered.without(EhloKeywords::STARTTLS);
        self.tls = Some(info);
        self.last_input = now;
    }

    /// The handshake after `start_tls` failed: the session closes without a reply (the
    /// connection is no longer plaintext SMTP) and gives `Closing(TlsFailed)`.
    pub fn tls_failed(&mut self, _now: Instant) {
        if !matches!(self.wait, Some(Wait::Handshake)) {
            log::warn!("smtp server: tls_failed() without a pending handshake");
            return;
        }
        self.close(CloseReason::TlsFailed);
    }

    /// Answers `AuthStart` or `AuthResponse` with the mechanism's next challenge (raw
    /// octets): `334 <base64>` is sent and the client's next line becomes `AuthResponse`.
    pub fn auth_challenge(&mut self, challenge: &[u8], now: Instant) {
        if !matches!(self.wait, Some(Wait::Auth)) {
            log::warn!("smtp server: auth_challenge() without a pending AUTH step");
            return;
        }
        self.wait = None;
        self.send_sasl_data(challenge);
        self.phase = Phase::AuthResponse;
        self.resume(now);
    }

    /// Answers `AuthStart` or `AuthResponse`: the mechanism succeeded for `user`. Without
    /// `final_data`, `235 2.7.0` is sent at once. With it (SCRAM's server-final message),
    /// `334 <base64>` is sent and the client must answer with an empty line; only then is
    /// the session authenticated and 235 sent (anything else: `501 5.5.2`).
    pub fn auth_success(&mut self, user: String, final_data: Option<&[u8]>, now: Instant) {
        if !matches!(self.wait, Some(Wait::Auth)) {
            log::warn!("smtp server: auth_success() without a pending AUTH step");
            return;
        }
        self.wait = None;
        match final_data {
            Some(data) => {
                self.send_sasl_data(data);
                self.phase = Phase::AuthFinal { user };
            }
            None => self.authenticated(user),
        }
        self.resume(now);
    }

    /// Answers `AuthStart` or `AuthResponse`: the exchange failed with `reply` (for
    /// example `535 5.7.8`, or `501 5.7.0` after the client's `*`). It counts towards the
    /// error limit, so repeated failures on one connection end in 421. The layer may wait
    /// before calling this (throttling); the session stays paused meanwhile.
    pub fn auth_failure(&mut self, reply: Reply, now: Instant) {
        if !matches!(self.wait, Some(Wait::Auth)) {
            log::warn!("smtp server: auth_failure() without a pending AUTH step");
            return;
        }
        self.wait = None;
        self.reject("AUTH", reply, true);
        if !self.is_closed() {
            self.resume(now);
        }
    }

    /// Whether AUTH succeeded in this session (and since the last TLS handshake): the
    /// protocol is then ESMTPA, or ESMTPSA under TLS.
    pub fn is_authenticated(&self) -> bool {
        self.auth_user.is_some()
    }

    /// The user AUTH succeeded for.
    pub fn authenticated_user(&self) -> Option<&str> {
        self.auth_user.as_deref()
    }

    /// Whether TLS is active: after `tls_established`, or from the start with `new_tls`.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The TLS state, once TLS is active.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
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
        match (phase, self.session_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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

    /// Drops unprocessed input and any line being discarded.
    fn forget_input(&mut self) {
        self.input = Vec::new();
        self.discarding = None;
        self.overrun = false;
    }

    fn greet(&mut self, now: Instant) {
        let text = format!("{} ESMTP drawbridge", self.config.host_name);
        self.reply(&Reply::plain(220, vec![text]));
        self.phase = Phase::Command;
        self.last_input = now;
    }

    fn session_deadline(&self) -> Option<Instant> {
        self.start.checked_add(self.config.max_session_time)
    }

    /// A limit as it applies now: at most `stress_timeout` under stress.
    fn limit(&self, d: Duration) -> Duration {
        if self.stressed {
            d.min(self.config.stress_timeout)
        } else {
            d
        }
    }

    /// The earlier of the phase's deadlines.
    fn phase_deadline(&self) -> Option<Instant> {
        match self.phase_deadlines() {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The phase's deadlines: for silence (reset by every octet), and for the whole
    /// command line or message content (which octets do not extend, but for the content's
    /// minimum rate).
    fn phase_deadlines(&self) -> (Option<Instant>, Option<Instant>) {
        match self.phase {
            Phase::Command | Phase::AuthResponse | Phase::AuthFinal { .. } => {
                let quiet = self
                    .last_input
                    .checked_add(self.limit(self.config.command_timeout));
                let line = self
                    .line_started
                    .and_then(|t| t.checked_add(self.limit(self.config.command_deadline)));
                (quiet, line)
            }
            Phase::Data(_) | Phase::Bdat { .. } => {
                let quiet = self
                    .last_input
                    .checked_add(self.limit(self.config.data_timeout));
                let rate = u128::from(self.config.min_data_rate.max(1));
                let credit_micros = u128::from(self.data_octets) * 1_000_000 / rate;
                let credit =
                    Duration::from_micros(u64::try_from(credit_micros).unwrap_or(u64::MAX));
                let whole = self
                    .data_started
                    .checked_add(self.limit(self.config.data_deadline))
                    .and_then(|t| t.checked_add(credit));
                (quiet, whole)
            }
            Phase::Greeting { .. } | Phase::Closed => (None, None),
        }
    }

    /// Notes whether a command line is partly read, and since when.
    fn note_line(&mut self, now: Instant) {
        let reading_lines = matches!(
            self.phase,
            Phase::Command | Phase::AuthResponse | Phase::AuthFinal { .. }
        );
        let partial = !self.input.is_empty() || self.discarding.is_some();
        if reading_lines && partial && self.wait.is_none() {
            self.line_started.get_or_insert(now);
        } else {
            self.line_started = None;
        }
    }

    /// Message content begins now (the time of the input or answer being processed).
    fn start_content(&mut self) {
        self.data_started = self.last_input;
        self.data_octets = 0;
    }

    fn time_out(&mut self, reason: CloseReason) {
        let command = match self.phase {
            Phase::Data(_) => "DATA",
            Phase::Bdat { .. } => "BDAT",
            Phase::AuthResponse | Phase::AuthFinal { .. } => "AUTH",
            _ => "CONNECT",
        };
        let host = &self.config.host_name;
        let reply = Reply::new(421, "4.4.2", format!("{host} Error: timeout exceeded"));
        self.reject(command, reply, false);
        self.close(reason);
    }

    /// Continues after the layer answered: processes what arrived meanwhile.
    fn resume(&mut self, now: Instant) {
        self.last_input = now;
        self.line_started = None;
        if self.overrun {
            let host = &self.config.host_name;
            let reply = Reply::new(
                421,
                "4.7.0",
                format!("{host} Error: too much pipelined input"),
            );
            self.reject("CONNECT", reply, false);
            self.close(CloseReason::SessionLimit);
            return;
        }
        self.process();
        self.note_line(now);
    }

    /// Runs the state machine over the buffered input until it is used up, the session
    /// waits for the layer, or it closes.
    fn process(&mut self) {
        let mut input = std::mem::take(&mut self.input);
        let mut pos = 0;
        while pos < input.len() && self.wait.is_none() && !self.is_closed() {
            let used = self.step(&input[pos..]);
            if used == 0 {
                break;
            }
            pos += used;
        }
        input.drain(..pos);
        if self.is_closed() {
            input.clear();
        } else if input.len() > MAX_PENDING_INPUT {
            // Only possible when a wait began with a large input still unread.
            input.truncate(MAX_PENDING_INPUT);
            self.overrun = true;
        }
        self.input = input;
        self.flush_data();
    }

    /// Consumes a prefix of `buf`; 0 when a complete unit needs more bytes.
    fn step(&mut self, buf: &[u8]) -> usize {
        match &mut self.phase {
            Phase::Greeting { .. } | Phase::Closed => buf.len(),
            Phase::Command => self.command_line(buf),
            Phase::AuthResponse | Phase::AuthFinal { .. } => self.auth_line(buf),
            Phase::Data(reader) => match reader.feed(buf, &mut self.data) {
                Some(used) => {
                    self.end_data();
                    used
                }
                None => {
                    self.data_octets = self.data_octets.saturating_add(buf.len() as u64);
                    buf.len()
                }
            },
            Phase::Bdat { remaining, .. } => {
                let n = usize::try_from(*remaining)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                *remaining -= n as u64;
                let done = *remaining == 0;
                self.data_octets = self.data_octets.saturating_add(n as u64);
                if let Some(checker) = &mut self.bdat {
                    checker.push(&buf[..n], &mut self.data);
                }
                if done {
                    self.end_chunk();
                }
                n
            }
        }
    }

    /// Frames one command line (RFC 5321 §2.3.8: CRLF only) and handles it.
    fn command_line(&mut self, buf: &[u8]) -> usize {
        let (used, framed) = self.frame(buf, MAX_COMMAND_LINE);
        match framed {
            None => {}
            Some(Ok(line)) => self.command(line),
            Some(Err((verb, e))) => self.reject(&verb, e.reply(), true),
        }
        used
    }

    /// Frames one line of an AUTH exchange and handles it.
    fn auth_line(&mut self, buf: &[u8]) -> usize {
        // Framing is the same as for commands, with RFC 4954's longer bound.
        let (used, framed) = self.frame(buf, MAX_AUTH_LINE + 2);
        let Some(framed) = framed else {
            return used;
        };
        let phase = std::mem::replace(&mut self.phase, Phase::Command);
        match (framed, phase) {
            (Ok(b""), Phase::AuthFinal { user }) => self.authenticated(user),
            (Ok(_), Phase::AuthFinal { .. }) => {
                let r = Reply::new(501, "5.5.2", "Error: expected an empty line");
                self.reject("AUTH", r, true);
            }
            (Ok(line), _) => {
                self.event(Event::AuthResponse(line.to_vec()));
                self.wait = Some(Wait::Auth);
            }
            (Err((_, LineError::TooLong)), _) => {
                let r = Reply::new(500, "5.5.6", "Authentication Exchange line is too long");
                self.reject("AUTH", r, true);
            }
            (Err((_, e)), _) => self.reject("AUTH", e.reply(), true),
        }
        used
    }

    /// Frames one line of at most `limit` octets with its CRLF: `(0, None)` when it needs
    /// more bytes, `(n, None)` when `n` octets of an over-long line were dropped, else the
    /// line without CRLF, or what is wrong with it with the verb for logs.
    #[allow(clippy::type_complexity)]
    fn frame<'a>(
        &mut self,
        buf: &'a [u8],
        limit: usize,
    ) -> (usize, Option<Result<&'a [u8], (String, LineError)>>) {
        let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
            if self.discarding.is_some() {
                return (buf.len(), None);
            }
            if buf.len() >= limit {
                // With its LF still to come the line is over the limit: drop it now.
                self.discarding = Some(verb_of(buf));
                return (buf.len(), None);
            }
            return (0, None);
        };
        let line = &buf[..lf];
        let error = if self.discarding.is_some() || lf + 1 > limit {
            Some(LineError::TooLong)
        } else if line.last() != Some(&b'\r') {
            Some(LineError::BareLf)
        } else if line[..lf - 1].contains(&b'\r') {
            Some(LineError::BareCr)
        } else if line.contains(&0) {
            Some(LineError::Nul)
        } else {
            None
        };
        let framed = match error {
            Some(e) => {
                let verb = self.discarding.take().unwrap_or_else(|| verb_of(line));
                Err((verb, e))
            }
            None => Ok(&line[..lf - 1]),
        };
        (lf + 1, Some(framed))
    }

    fn command(&mut self, line: &[u8]) {
        let verb = verb_of(line);
        let command = match Command::parse(line) {
            Ok(c) => c,
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
            Command::Data => {
                if let Some(refusal) = self.refuse_content() {
                    return self.reject(&verb, refusal, true);
                }
                if self.bdat.is_some() {
                    let r = Reply::new(503, "5.5.1", "Error: BDAT transfer in progress");
                    return self.reject(&verb, r, true);
                }
                self.event(Event::MessageBegin);
                self.reply(&Reply::plain(
                    354,
                    vec!["End data with <CR><LF>.<CR><LF>".into()],
                ));
                let reader =
                    DataReader::new(self.config.max_line_length, self.config.max_message_size);
                self.phase = Phase::Data(reader);
                self.start_content();
            }
            Command::Bdat { size, last } => {
                let refusal = if !self.esmtp() || !self.offered.contains(EhloKeywords::CHUNKING) {
                    Some(Reply::new(502, "5.5.1", "Error: command not implemented"))
                } else {
                    self.refuse_content()
                };
                match refusal {
                    Some(refusal) => self.refuse_chunk(size, last, refusal),
                    None => {
                        if self.bdat.is_none() {
                            self.event(Event::MessageBegin);
                            let checker = ContentChecker::new(
                                self.config.max_line_length,
                                self.config.max_message_size,
                            );
                            self.bdat = Some(checker);
                        }
                        self.read_chunk(size, last, None);
                    }
                }
            }
            Command::Rset => {
                self.reset_transaction();
                self.reply(&Reply::new(250, "2.0.0", "Ok"));
            }
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

    /// Reads (or with `refusal`, only consumes) a BDAT chunk of `size` octets.
    fn read_chunk(&mut self, size: u64, last: bool, refusal: Option<Reply>) {
        self.start_content();
        self.phase = Phase::Bdat {
            remaining: size,
            chunk: size,
            last,
            refusal,
        };
        if size == 0 {
            self.end_chunk();
        }
    }

    /// Consumes a BDAT chunk and answers it with `refusal`.
    fn refuse_chunk(&mut self, size: u64, last: bool, refusal: Reply) {
        self.read_chunk(size, last, Some(refusal));
    }

    fn starttls(&mut self, verb: &str) {
        let refusal = if self.tls.is_some() {
            Reply::new(503, "5.5.1", "Error: TLS already active")
        } else if !self.offered.contains(EhloKeywords::STARTTLS) {
            Reply::new(502, "5.5.1", "Error: command not implemented")
        } else if !self.esmtp() {
            Reply::new(503, "5.5.1", "Error: send EHLO first")
        } else if self.mail.is_some() || self.bdat.is_some() {
            Reply::new(503, "5.5.1", "Error: MAIL transaction in progress")
        } else {
            self.event(Event::StartTlsRequested);
            self.wait = Some(Wait::StartTls);
            return;
        };
        self.reject(verb, refusal, true);
    }

    /// RFC 4954 §4: AUTH is checked against the session state and the mechanisms offered,
    /// then handed to the layer.
    fn auth(&mut self, verb: &str, mechanism: String, initial: Option<Vec<u8>>) {
        let configured = self
            .config
            .auth_mechanisms
            .iter()
            .any(|c| c.eq_ignore_ascii_case(&mechanism));
        // AUTH exists when some mechanism is configured, even if none is usable before TLS.
        let refusal = if !self.offered.contains(EhloKeywords::AUTH)
            || self.config.auth_mechanisms.is_empty()
        {
            Reply::new(502, "5.5.1", "Error: command not implemented")
        } else if !self.esmtp() {
            Reply::new(503, "5.5.1", "Error: send EHLO first")
        } else if self.is_authenticated() {
            Reply::new(503, "5.5.1", "Error: already authenticated")
        } else if self.mail.is_some() || self.bdat.is_some() {
            Reply::new(503, "5.5.1", "Error: MAIL transaction in progress")
        } else if self.auth_offered().contains(&mechanism) {
            self.event(Event::AuthStart { mechanism, initial });
            self.wait = Some(Wait::Auth);
            return;
        } else if configured && self.needs_tls(&mechanism) && !self.is_tls() {
            Reply::new(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            )
        } else {
            Reply::new(504, "5.5.4", "Unrecognized authentication type")
        };
        self.reject(verb, refusal, true);
    }

    fn needs_tls(&self, mechanism: &str) -> bool {
        self.config
            .auth_needs_tls
            .iter()
            .any(|m| m.eq_ignore_ascii_case(mechanism))
    }

    /// The mechanisms usable now, upper-cased, in configured order: those needing TLS
    /// only under TLS, EXTERNAL only with a verified client certificate.
    fn auth_offered(&self) -> Vec<String> {
        let client_cert = self
            .tls
            .as_ref()
            .is_some_and(|t| t.peer_certificate.is_some());
        self.config
            .auth_mechanisms
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .filter(|m| self.is_tls() || !self.needs_tls(m))
            .filter(|m| m != "EXTERNAL" || client_cert)
            .collect()
    }

    /// The keywords EHLO advertises now: AUTH only with a mechanism to offer.
    fn advertised(&self) -> EhloKeywords {
        if self.auth_offered().is_empty() {
            self.offered.without(EhloKeywords::AUTH)
        } else {
            self.offered
        }
    }

    /// Sends `334 <base64 of data>` in one line. The data comes from our own mechanisms
    /// (at most a SCRAM server-first message), never from the peer, so the line is not cut.
    fn send_sasl_data(&mut self, data: &[u8]) {
        self.out.extend_from_slice(b"334 ");
        self.out
            .extend_from_slice(crate::sasl::base64::encode(data).as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn authenticated(&mut self, user: String) {
        self.auth_user = Some(user);
        self.reply(&Reply::new(235, "2.7.0", "Authentication successful"));
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

    fn mail(&mut self, verb: &str, path: Path, params: &[Param]) {
        if self.helo.is_none() {
            return self.reject(
                verb,
                Reply::new(503, "5.5.1", "Error: send HELO/EHLO first"),
                true,
            );
        }
        if self.mail.is_some() {
            return self.reject(
                verb,
                Reply::new(503, "5.5.1", "Error: nested MAIL command"),
                true,
            );
        }
        if self.config.max_messages > 0 && self.messages >= self.config.max_messages {
            let r = Reply::new(452, "4.5.3", "Error: too many messages in this session");
            return self.reject(verb, r, false);
        }
        if self.config.require_auth && !self.is_authenticated() {
            let r = Reply::new(530, "5.7.0", "Authentication required");
            return self.reject(verb, r, true);
        }
        if matches!(path.target, PathTarget::Postmaster(_)) {
            return self.reject(verb, CommandError::BadSender.reply(), true);
        }
        let mut params = match mail_params(params, self.offered_now(), self.config.max_message_size)
        {
            Ok(p) => p,
            Err(e) => return self.reject(verb, e.reply(), e != ParamError::TooBig),
        };
        if params.auth.is_some() && !self.is_authenticated() {
            // RFC 4954 §5: accepted, but treated as `<>` from a client that has not
            // authenticated.
            params.auth = Some(String::new());
        }
        if !path.target.is_ascii() && !params.smtputf8 {
            return self.reject(verb, non_ascii_reply(), true);
        }
        let from = path.target.to_address();
        self.event(Event::CheckMail {
            from: from.clone(),
            params: params.clone(),
        });
        self.wait = Some(Wait::Mail { from, params });
    }

    fn rcpt(&mut self, verb: &str, path: Path, params: &[Param]) {
        let Some((_, mail_params)) = &self.mail else {
            return self.reject(
                verb,
                Reply::new(503, "5.5.1", "Error: need MAIL command"),
                true,
            );
        };
        let smtputf8 = mail_params.smtputf8;
        if self.bdat.is_some() {
            return self.reject(
                verb,
                Reply::new(503, "5.5.1", "Error: BDAT transfer in progress"),
                true,
            );
        }
        self.rcpt_seen = true;
        let written = path.target.to_address();
        let params = match rcpt_params(params, self.offered_now()) {
            Ok(p) => p,
            Err(e) => return self.reject_rcpt(verb, &written, e.reply(), true),
        };
        if !path.target.is_ascii() && !smtputf8 {
            return self.reject_rcpt(verb, &written, non_ascii_reply(), true);
        }
        if self.rcpts.len() >= self.config.max_recipients as usize {
            return self.reject_rcpt(
                verb,
                &written,
                Reply::new(452, "4.5.3", "Error: too many recipients"),
                false,
            );
        }
        // INVARIANT: the command parser refuses the null path in RCPT.
        let Some(to) = Recipient::from_target(path.target) else {
            return self.reject_rcpt(verb, &written, CommandError::BadRecipient.reply(), true);
        };
        self.event(Event::CheckRcpt {
            to: to.clone(),
            had_source_route: path.had_source_route,
            params: params.clone(),
        });
        self.wait = Some(Wait::Rcpt {
            to: to.to_string(),
            params,
        });
    }

    /// The refusal of DATA or BDAT for want of recipients, if any.
    fn refuse_content(&self) -> Option<Reply> {
        if self.mail.is_none() {
            Some(Reply::new(503, "5.5.1", "Error: need MAIL command"))
        } else if !self.rcpts.is_empty() {
            None
        } else if self.rcpt_seen {
            Some(Reply::new(554, "5.5.1", "Error: no valid recipients"))
        } else {
            Some(Reply::new(503, "5.5.1", "Error: need RCPT command"))
        }
    }

    /// The end of DATA content has been read.
    fn end_data(&mut self) {
        let Phase::Data(reader) = &mut self.phase else {
            return;
        };
        let result = reader.finish();
        self.phase = Phase::Command;
        self.end_message(result, "DATA");
    }

    /// A BDAT chunk has been read in full.
    fn end_chunk(&mut self) {
        let Phase::Bdat {
            chunk,
            last,
            refusal,
            ..
        } = std::mem::replace(&mut self.phase, Phase::Command)
        else {
            return;
        };
        if let Some(reply) = refusal {
            return self.reject("BDAT", reply, true);
        }
        let Some(checker) = &mut self.bdat else {
            // A chunk is accepted only once its checker exists (see `command`).
            return;
        };
        if let Some(e) = checker.error() {
            self.end_message(Err(e), "BDAT");
        } else if last {
            let result = checker.finish();
            self.end_message(result, "BDAT");
        } else {
            self.reply(&Reply::new(
                250,
                "2.0.0",
                format!("{chunk} octets received"),
            ));
        }
    }

    /// Commits or refuses the message whose content has ended; clears the transaction.
    fn end_message(&mut self, result: Result<u64, ContentError>, command: &'static str) {
        self.bdat = None;
        match result {
            Ok(size) => {
                // Content is read only after HELO/EHLO and MAIL, so both are set here.
                let (helo, esmtp) = self.helo.clone().unwrap_or_default();
                let (from, mail_params) = self.mail.take().unwrap_or_default();
                let transaction = Transaction {
                    auth_user: self.auth_user.clone(),
                    mail_auth: mail_params.auth.clone(),
                    helo,
                    esmtp,
                    from,
                    mail_params,
                    rcpts: std::mem::take(&mut self.rcpts),
                    size,
                    tls: self.tls.clone(),
                };
                self.reset_transaction();
                self.messages = self.messages.saturating_add(1);
                self.event(Event::MessageEnd(transaction));
                self.wait = Some(Wait::Commit { command });
            }
            Err(e) => {
                self.event(Event::MessageAbort);
                self.reset_transaction();
                self.reject(command, e.reply(), e.is_protocol_error());
            }
        }
    }

    /// Forgets MAIL and RCPT; a BDAT message under way is aborted.
    fn reset_transaction(&mut self) {
        if self.bdat.take().is_some() {
            self.event(Event::MessageAbort);
        }
        self.mail = None;
        self.rcpts.clear();
        self.rcpt_seen = false;
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

/// RFC 6531 §3.5: a non-ASCII address needs SMTPUTF8 on MAIL.
fn non_ascii_reply() -> Reply {
    Reply::new(553, "5.6.7", "Error: non-ASCII address requires SMTPUTF8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::command::{Body, Notify, Ret};

    const GREETING: &[u8] = b"220 mx.test ESMTP drawbridge\r\n";
    const EHLO_REPLY: &[u8] =
        b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n\
        250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
    const OK: &[u8] = b"250 2.0.0 Ok\r\n";
    const MAIL_OK: &[u8] = b"250 2.1.0 Ok\r\n";
    const RCPT_OK: &[u8] = b"250 2.1.5 Ok\r\n";
    const GO_AHEAD: &[u8] = b"354 End data with <CR><LF>.<CR><LF>\r\n";
    const QUEUED: &[u8] = b"250 2.0.0 Ok: queued as TESTID\r\n";

    fn config() -> ServerConfig {
        ServerConfig {
            host_name: "mx.test".into(),
            max_message_size: 10_000,
            max_recipients: 3,
            max_line_length: 1000,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            // Deadlines out of the way of the timeout tests; theirs set them.
            command_deadline: Duration::from_secs(7200),
            data_deadline: Duration::from_secs(7200),
            min_data_rate: 500,
            stress_timeout: Duration::from_secs(10),
            max_session_time: Duration::from_secs(3600),
            max_messages: 5,
            error_limit: 10,
            greet_delay: Duration::ZERO,
            ehlo_keywords: EhloKeywords::ALL,
            tls_available: false,
            require_tls: false,
            auth_mechanisms: Vec::new(),
            auth_needs_tls: Vec::new(),
            require_auth: false,
        }
    }

    /// One step of a transcript.
    #[derive(Clone, Debug)]
    enum Step {
        /// The client writes these bytes.
        C(Vec<u8>),
        /// The server's next output is exactly this (checked when the transcript is fed
        /// whole; split runs compare the total with the whole run).
        S(Vec<u8>),
        /// Time passes, then `handle_timeout`.
        Wait(Duration),
        /// Everything the server has written so far is not checked further.
        Any,
        /// The layer's TLS handshake ends: `tls_established` with `tls_info()` (true) or
        /// `tls_failed` (false). Client writes before it are fed before it.
        Handshake(bool),
    }
    use Step::Wait;

    fn c(b: impl AsRef<[u8]>) -> Step {
        Step::C(b.as_ref().to_vec())
    }
    fn s(b: impl AsRef<[u8]>) -> Step {
        Step::S(b.as_ref().to_vec())
    }
    fn secs(n: u64) -> Step {
        Wait(Duration::from_secs(n))
    }

    /// What one run produced.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Outcome {
        out: Vec<u8>,
        /// Events with adjacent `MessageData` merged.
        events: Vec<Event>,
        closed: bool,
        tls: bool,
        /// `authenticated_user()` at the end.
        user: Option<String>,
    }

    impl Outcome {
        /// Content of every committed message.
        fn committed(&self) -> Vec<Vec<u8>> {
            let mut done = Vec::new();
            let mut cur = None::<Vec<u8>>;
            for e in &self.events {
                match e {
                    Event::MessageBegin => cur = Some(Vec::new()),
                    Event::MessageData(d) => cur
                        .as_mut()
                        .expect("data inside a message")
                        .extend_from_slice(d),
                    Event::MessageEnd(_) => done.push(cur.take().expect("end inside a message")),
                    Event::MessageAbort => cur = None,
                    _ => {}
                }
            }
            done
        }

        fn count(&self, pred: impl Fn(&Event) -> bool) -> usize {
            self.events.iter().filter(|e| pred(e)).count()
        }

        fn message_ends(&self) -> usize {
            self.count(|e| matches!(e, Event::MessageEnd(_)))
        }
    }

    /// How the test layer treats TLS.
    #[derive(Clone, Copy, Debug, Default)]
    struct TlsMode {
        /// Start sessions with `new_tls` (RFC 8314 implicit TLS).
        implicit: bool,
        /// Answer `StartTlsRequested` with `tls_unavailable` instead of `start_tls`.
        refuse: bool,
        /// The client presents no certificate (`TlsInfo::peer_certificate` is `None`).
        no_client_cert: bool,
    }

    thread_local! {
        static TLS_MODE: std::cell::Cell<TlsMode> = const {
            std::cell::Cell::new(TlsMode { implicit: false, refuse: false, no_client_cert: false })
        };
    }

    /// `check` with the test layer treating TLS as `mode`.
    fn check_tls(cfg: &ServerConfig, mode: TlsMode, steps: &[Step]) -> Outcome {
        TLS_MODE.with(|m| m.set(mode));
        let o = check(cfg, steps);
        TLS_MODE.with(|m| m.set(TlsMode::default()));
        o
    }

    fn tls_info() -> TlsInfo {
        let peer_certificate = PeerCertificate {
            subject: "CN=client.example".into(),
            san_emails: vec!["a@example.org".into()],
        };
        TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
            peer_certificate: (!TLS_MODE.with(|m| m.get().no_client_cert))
                .then_some(peer_certificate),
        }
    }

    /// The test SASL layer, stateless: it answers by the line's content. `user` and
    /// `pass` (LOGIN) and `\0user\0pass` (PLAIN) authenticate `user`; `scram` does too,
    /// with server-final data `v=xyz`; `*` cancels; anything else is refused.
    fn respond_auth(session: &mut Session, line: &[u8], now: Instant) {
        match line {
            b"*" => session.auth_failure(Reply::new(501, "5.7.0", "Authentication aborted"), now),
            b"dXNlcg==" => session.auth_challenge(b"Password:", now),
            b"cGFzcw==" | b"AHVzZXIAcGFzcw==" => session.auth_success("user".into(), None, now),
            b"c2NyYW0=" => session.auth_success("user".into(), Some(b"v=xyz"), now),
            _ => session.auth_failure(
                Reply::new(535, "5.7.8", "Authentication credentials invalid"),
                now,
            ),
        }
    }

    /// The test policy: senders `spammer@…` and recipients `nobody@…` are refused; a
    /// message from `tempfail@…` fails to commit; everything else is accepted. STARTTLS
    /// is answered as `TLS_MODE` says.
    fn respond(session: &mut Session, event: &Event, now: Instant) {
        match event {
            Event::AuthStart {
                initial: Some(line),
                ..
            }
            | Event::AuthResponse(line) => respond_auth(session, line, now),
            Event::AuthStart { mechanism, .. } if mechanism == "LOGIN" => {
                session.auth_challenge(b"Username:", now)
            }
            Event::AuthStart { .. } => session.auth_challenge(b"", now),
            Event::StartTlsRequested if TLS_MODE.with(|m| m.get().refuse) => {
                session.tls_unavailable(now)
            }
            Event::StartTlsRequested => session.start_tls(now),
            Event::CheckMail { from, .. } if from.starts_with("spammer@") => session.answer(
                Verdict::Reject(Reply::new(550, "5.7.1", "Sender refused")),
                now,
            ),
            Event::CheckRcpt { to, .. } if to.local_part() == "nobody" => session.answer(
                Verdict::Reject(Reply::new(550, "5.1.1", "No such user")),
                now,
            ),
            Event::CheckMail { .. } | Event::CheckRcpt { .. } => {
                session.answer(Verdict::Accept, now)
            }
            Event::MessageEnd(t) if t.from.starts_with("tempfail@") => {
                session.commit_done(Err(Reply::new(451, "4.3.0", "Queue busy")), now)
            }
            Event::MessageEnd(_) => session.commit_done(Ok("TESTID".into()), now),
            _ => {}
        }
    }

    /// Drains output and events, answering as the policy says, until quiet.
    fn drain(session: &mut Session, now: Instant, out: &mut Vec<u8>, events: &mut Vec<Event>) {
        loop {
            if let Some(bytes) = session.poll_transmit() {
                assert!(!bytes.is_empty());
                out.extend_from_slice(&bytes);
            }
            let Some(event) = session.poll_event() else {
                break;
            };
            if let Event::MessageData(d) = &event {
                assert!(!d.is_empty(), "empty MessageData");
            }
            respond(session, &event, now);
            match (events.last_mut(), event) {
                (Some(Event::MessageData(prev)), Event::MessageData(more)) => {
                    prev.extend_from_slice(&more)
                }
                (_, event) => events.push(event),
            }
        }
        assert!(session.poll_transmit().is_none());
    }

    /// Runs `steps` with the client writes cut into `chunks` pieces per segment.
    /// `cut(offset, segment)` gives the chunk lengths for a segment starting at `offset`
    /// in the whole client stream; `None` feeds each `C` step as written and checks
    /// every `S` step.
    fn execute(
        cfg: &ServerConfig,
        steps: &[Step],
        cut: Option<&dyn Fn(usize, usize) -> Vec<usize>>,
    ) -> Outcome {
        let mut now = Instant::now();
        let mut session = if TLS_MODE.with(|m| m.get().implicit) {
            Session::new_tls(Rc::new(cfg.clone()), tls_info(), now)
        } else {
            Session::new(Rc::new(cfg.clone()), now)
        };
        let (mut out, mut events) = (Vec::new(), Vec::new());
        drain(&mut session, now, &mut out, &mut events);
        let mut checked = 0;
        let mut segment = Vec::new();
        let mut offset = 0;
        let mut feed = |session: &mut Session,
                        seg: &mut Vec<u8>,
                        now,
                        out: &mut Vec<u8>,
                        events: &mut Vec<Event>| {
            let mut lens = match cut {
                Some(cut) => cut(offset, seg.len()),
                None => vec![seg.len()],
            };
            lens.retain(|&n| n > 0);
            assert_eq!(lens.iter().sum::<usize>(), seg.len());
            let mut at = 0;
            for n in lens {
                session.handle_input(&seg[at..at + n], now);
                drain(session, now, out, events);
                at += n;
            }
            offset += seg.len();
            seg.clear();
        };
        for step in steps {
            match step {
                Step::C(bytes) => {
                    segment.extend_from_slice(bytes);
                    if cut.is_none() {
                        feed(&mut session, &mut segment, now, &mut out, &mut events);
                    }
                }
                Step::S(expected) => {
                    if cut.is_none() {
                        let got = &out[checked..];
                        let got = &got[..got.len().min(expected.len())];
                        assert_eq!(
                            String::from_utf8_lossy(got),
                            String::from_utf8_lossy(expected),
                            "server output"
                        );
                        checked += expected.len();
                    }
                }
                Step::Any => checked = out.len(),
                Wait(d) => {
                    feed(&mut session, &mut segment, now, &mut out, &mut events);
                    now += *d;
                    if let Some(t) = session.poll_timeout() {
                        if now >= t {
                            session.handle_timeout(now);
                        }
                    }
                    drain(&mut session, now, &mut out, &mut events);
                }
                Step::Handshake(ok) => {
                    feed(&mut session, &mut segment, now, &mut out, &mut events);
                    if *ok {
                        session.tls_established(tls_info(), now);
                    } else {
                        session.tls_failed(now);
                    }
                    drain(&mut session, now, &mut out, &mut events);
                }
            }
        }
        feed(&mut session, &mut segment, now, &mut out, &mut events);
        Outcome {
            out,
            events,
            closed: session.is_closed(),
            tls: session.is_tls(),
            user: {
                assert_eq!(
                    session.is_authenticated(),
                    session.authenticated_user().is_some()
                );
                session.authenticated_user().map(str::to_string)
            },
        }
    }

    /// Runs a transcript whole, one byte at a time and split in two at every index; all
    /// runs must give the same output and events. Returns the outcome.
    fn check(cfg: &ServerConfig, steps: &[Step]) -> Outcome {
        let whole = execute(cfg, steps, None);
        let total: usize = steps
            .iter()
            .map(|s| if let Step::C(b) = s { b.len() } else { 0 })
            .sum();
        let bytewise = execute(cfg, steps, Some(&|_, len| vec![1; len]));
        assert_eq!(bytewise, whole, "one byte at a time");
        for i in 0..=total {
            let split = move |offset: usize, len: usize| {
                if (offset..offset + len).contains(&i) {
                    vec![i - offset, offset + len - i]
                } else {
                    vec![len]
                }
            };
            let run = execute(cfg, steps, Some(&split));
            assert_eq!(run, whole, "split at {i}");
        }
        assert!(
            well_formed(&whole.out),
            "{}",
            String::from_utf8_lossy(&whole.out)
        );
        whole
    }

    /// Every reply line is `ddd[ -]text` CRLF, at most 512 octets; error replies carry an
    /// enhanced code of their class; no CR or LF stands alone.
    fn well_formed(out: &[u8]) -> bool {
        if !out.is_empty() && !out.ends_with(b"\r\n") {
            return false;
        }
        for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Some(line) = line.strip_suffix(b"\r") else {
                return false;
            };
            if line.len() + 2 > crate::smtp::reply::MAX_REPLY_LINE
                || line.contains(&b'\r')
                || line.len() < 4
            {
                return false;
            }
            let Ok(text) = std::str::from_utf8(line) else {
                return false;
            };
            let code = &text[..3];
            if !code.bytes().all(|b| b.is_ascii_digit())
                || !matches!(code.as_bytes()[0], b'2'..=b'5')
            {
                return false;
            }
            if !matches!(line[3], b' ' | b'-') {
                return false;
            }
            let enhanced = text[4..]
                .split(' ')
                .next()
                .and_then(crate::smtp::reply::Enhanced::parse);
            match enhanced {
                Some(e) if e.class != code.as_bytes()[0] - b'0' => return false,
                None if matches!(code.as_bytes()[0], b'4' | b'5') => return false,
                _ => {}
            }
        }
        true
    }

    /// True when each of `parts` occurs in `out`, in order.
    fn in_order(out: &[u8], parts: &[&[u8]]) -> bool {
        let mut at = 0;
        for p in parts {
            match out[at..].windows(p.len()).position(|w| w == *p) {
                Some(i) => at += i + p.len(),
                None => return false,
            }
        }
        true
    }

    fn has(out: &[u8], part: &[u8]) -> bool {
        in_order(out, &[part])
    }

    /// The usual opening: greeting, EHLO, one sender, one recipient.
    fn opening() -> Vec<Step> {
        vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            Step::Any,
            c("MAIL FROM:<a@example.org>\r\n"),
            s(MAIL_OK),
            c("RCPT TO:<b@example.com>\r\n"),
            s(RCPT_OK),
        ]
    }

    fn with(mut steps: Vec<Step>, more: Vec<Step>) -> Vec<Step> {
        steps.extend(more);
        steps
    }

    // ---- happy paths ----

    #[test]
    fn ehlo_lists_offered_keywords_without_starttls_and_auth() {
        let o = check(
            &config(),
            &[s(GREETING), c("ehlo client.example\r\n"), s(EHLO_REPLY)],
        );
        assert_eq!(
            o.events,
            vec![Event::Helo {
                name: "client.example".into(),
                esmtp: true
            }]
        );
        let mut cfg = config();
        cfg.ehlo_keywords = EhloKeywords::NONE
            .with(EhloKeywords::SIZE)
            .with(EhloKeywords::STARTTLS);
        cfg.max_message_size = 77;
        check(
            &cfg,
            &[
                s(GREETING),
                c("EHLO [192.0.2.1]\r\n"),
                s("250-mx.test\r\n250 SIZE 77\r\n"),
            ],
        );
    }

    #[test]
    fn full_transaction_undoes_dot_stuffing() {
        let steps = with(
            opening(),
            vec![
                c("DATA\r\n"),
                s(GO_AHEAD),
                c("Subject: t\r\n\r\n..line\r\n.x\r\n...\r\nend\r\n.\r\n"),
                s(QUEUED),
                c("QUIT\r\n"),
                s("221 2.0.0 Bye\r\n"),
            ],
        );
        let o = check(&config(), &steps);
        assert_eq!(
            o.committed(),
            vec![b"Subject: t\r\n\r\n.line\r\nx\r\n..\r\nend\r\n".to_vec()]
        );
        let Some(Event::MessageEnd(t)) =
            o.events.iter().find(|e| matches!(e, Event::MessageEnd(_)))
        else {
            panic!("no MessageEnd")
        };
        assert_eq!(t.helo, "client.example");
        assert!(t.esmtp);
        assert_eq!(t.from, "a@example.org");
        assert_eq!(
            t.rcpts,
            vec![("b@example.com".to_string(), RcptParams::default())]
        );
        assert_eq!(t.size, 33);
        assert!(o.closed);
        assert_eq!(o.events.last(), Some(&Event::Closing(CloseReason::Quit)));
    }

    #[test]
    fn empty_message_and_two_messages_in_a_session() {
        let steps = with(
            opening(),
            vec![
                c("DATA\r\n.\r\n"),
                s([GO_AHEAD, QUEUED].concat()),
                c("MAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\nDATA\r\nx\r\n.\r\n"),
                s([MAIL_OK, RCPT_OK, GO_AHEAD, QUEUED].concat()),
            ],
        );
        let o = check(&config(), &steps);
        assert_eq!(o.committed(), vec![Vec::new(), b"x\r\n".to_vec()]);
        assert!(o.events.contains(&Event::CheckMail {
            from: String::new(),
            params: MailParams::default()
        }));
        assert!(o.events.contains(&Event::CheckRcpt {
            to: Recipient::Postmaster("Postmaster".into()),
            had_source_route: false,
            params: RcptParams::default()
        }));
    }

    #[test]
    fn eight_bit_body() {
        let body = b"Subject: caf\xc3\xa9\r\n\r\n\xe2\x82\xac \xff\xfe\r\n";
        let steps = vec![
            s(GREETING),
            c(
                "EHLO c.example\r\nMAIL FROM:<a@example.org> BODY=8BITMIME\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
            ),
            s([EHLO_REPLY, MAIL_OK, RCPT_OK, GO_AHEAD].concat()),
            c([&body[..], b".\r\n"].concat()),
            s(QUEUED),
        ];
        let o = check(&config(), &steps);
        assert_eq!(o.committed(), vec![body.to_vec()]);
        let want = MailParams {
            body: Some(Body::EightBitMime),
            ..MailParams::default()
        };
        assert!(o.events.contains(&Event::CheckMail {
            from: "a@example.org".into(),
            params: want
        }));
    }

    #[test]
    fn bdat_chunks_with_crlf_across_the_boundary() {
        let steps = with(
            opening(),
            vec![
                c("BDAT 4\r\nabc\r"),
                s("250 2.0.0 4 octets received\r\n"),
                c("BDAT 7 LAST\r\n\n.\r\nd\r\n"),
                s(QUEUED),
                c("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nBDAT 0 LAST\r\n"),
                s([MAIL_OK, RCPT_OK, QUEUED].concat()),
            ],
        );
        let o = check(&config(), &steps);
        assert_eq!(
            o.committed(),
            vec![b"abc\r\n.\r\nd\r\n".to_vec(), Vec::new()]
        );
        assert_eq!(o.count(|e| matches!(e, Event::MessageBegin)), 2);
    }

    #[test]
    fn bdat_refusals_consume_the_chunk() {
        let mut cfg = config();
        cfg.ehlo_keywords = EhloKeywords::ALL.without(EhloKeywords::CHUNKING);
        let o = check(&cfg, &[c("EHLO c.example\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n")]);
        assert!(in_order(
            &o.out,
            &[b"502 5.5.1 Error: command not implemented\r\n", OK]
        ));
        assert!(!o.closed);
        // No recipients: the chunk is eaten, then 503.
        let o = check(
            &config(),
            &[c(
                "EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n",
            )],
        );
        assert!(in_order(
            &o.out,
            &[MAIL_OK, b"503 5.5.1 Error: need RCPT command\r\n", OK]
        ));
        assert_eq!(o.count(|e| matches!(e, Event::MessageBegin)), 0);
        // All recipients refused.
        let o = check(
            &config(),
            &[c(
                "EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<nobody@b.example>\r\nDATA\r\n",
            )],
        );
        assert!(has(&o.out, b"554 5.5.1 Error: no valid recipients\r\n"));
    }

    #[test]
    fn bdat_failed_chunk_kills_the_transaction() {
        let steps = with(
            opening(),
            vec![
                c("BDAT 4\r\na\nbc"),
                s("550 5.5.2 Message refused: bare <CR> or <LF> in data\r\n"),
                c("BDAT 3 LAST\r\nxyz"),
                s("503 5.5.1 Error: need MAIL command\r\n"),
                c("DATA\r\n"),
                s("503 5.5.1 Error: need MAIL command\r\n"),
                c("RSET\r\n"),
                s(OK),
            ],
        );
        let o = check(&config(), &steps);
        assert_eq!(o.message_ends(), 0);
        assert_eq!(o.count(|e| matches!(e, Event::MessageAbort)), 1);
        // DATA in the middle of a BDAT transaction is refused; RSET aborts it.
        let steps = with(
            opening(),
            vec![
                c("BDAT 1\r\nx"),
                s("250 2.0.0 1 octets received\r\n"),
                c("DATA\r\n"),
                s("503 5.5.1 Error: BDAT transfer in progress\r\n"),
                c("RSET\r\n"),
                s(OK),
            ],
        );
        let o = check(&config(), &steps);
        assert_eq!(o.message_ends(), 0);
        assert_eq!(o.count(|e| matches!(e, Event::MessageAbort)), 1);
    }

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
        let Some(Event::MessageEnd(t)) =
            o.events.iter().find(|e| matches!(e, Event::MessageEnd(_)))
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
    fn helo_allows_no_esmtp_parameters() {
        let steps = vec![
            s(GREETING),
            c("HELO c.example\r\n"),
            s("250 mx.test\r\n"),
            c("MAIL FROM:<a@example.org> SIZE=10\r\n"),
            s("555 5.5.4 Unsupported option: SIZE\r\n"),
            c(
                "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com> NOTIFY=NEVER\r\nBDAT 1 LAST\r\nx",
            ),
            s([
                MAIL_OK,
                b"555 5.5.4 Unsupported option: NOTIFY\r\n" as &[u8],
                b"502 5.5.1 Error: command not implemented\r\n",
            ]
            .concat()),
        ];
        let o = check(&config(), &steps);
        assert_eq!(
            o.events[0],
            Event::Helo {
                name: "c.example".into(),
                esmtp: false
            }
        );
    }

    #[test]
    fn dsn_parameters_are_parsed() {
        let steps =
            vec![
            c("EHLO c.example\r\nMAIL FROM:<a@example.org> RET=HDRS ENVID=QQ+2B1 SIZE=100\r\n\
               RCPT TO:<b@example.com> NOTIFY=FAILURE,DELAY ORCPT=rfc822;b+40example.com\r\n\
               RCPT TO:<c@example.com> NOTIFY=BOGUS\r\nRCPT TO:<d@example.com> FOO=1\r\n"),
            s([GREETING, EHLO_REPLY, MAIL_OK, RCPT_OK].concat()),
            s(b"501 5.5.4 Bad parameter value: NOTIFY\r\n555 5.5.4 Unsupported option: FOO\r\n"),
        ];
        let o = check(&config(), &steps);
        let mail = MailParams {
            size: Some(100),
            ret: Some(Ret::Hdrs),
            envid: Some("QQ+2B1".into()),
            ..MailParams::default()
        };
        assert!(o.events.contains(&Event::CheckMail {
            from: "a@example.org".into(),
            params: mail
        }));
        let rcpt = RcptParams {
            notify: Some(Notify {
                never: false,
                success: false,
                failure: true,
                delay: true,
            }),
            orcpt: Some("rfc822;b+40example.com".into()),
        };
        assert!(o.events.contains(&Event::CheckRcpt {
            to: Recipient::parse("b@example.com").unwrap(),
            had_source_route: false,
            params: rcpt
        }));
        let mut cfg = config();
        cfg.ehlo_keywords = EhloKeywords::ALL.without(EhloKeywords::DSN);
        let o = check(
            &cfg,
            &[c(
                "EHLO c.example\r\nMAIL FROM:<a@example.org> RET=FULL\r\n",
            )],
        );
        assert!(has(&o.out, b"555 5.5.4 Unsupported option: RET\r\n"));
    }

    #[test]
    fn smtputf8_addresses() {
        let steps = vec![
            c(
                "EHLO c.example\r\nMAIL FROM:<j\u{f6}rg@b\u{fc}cher.example> SMTPUTF8\r\nRCPT TO:<\u{4f60}\u{597d}@example.com>\r\nDATA\r\n",
            ),
            s([GREETING, EHLO_REPLY, MAIL_OK, RCPT_OK, GO_AHEAD].concat()),
            c("x\r\n.\r\n"),
            s(QUEUED),
            c(
                "MAIL FROM:<j\u{f6}rg@example.org>\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<\u{e9}@example.com>\r\n",
            ),
            s([
                b"553 5.6.7 Error: non-ASCII address requires SMTPUTF8\r\n" as &[u8],
                MAIL_OK,
                b"553 5.6.7 Error: non-ASCII address requires SMTPUTF8\r\n",
            ]
            .concat()),
        ];
        let o = check(&config(), &steps);
        assert_eq!(o.message_ends(), 1);
        let params = MailParams {
            smtputf8: true,
            ..MailParams::default()
        };
        assert!(o.events.contains(&Event::CheckMail {
            from: "j\u{f6}rg@b\u{fc}cher.example".into(),
            params
        }));
        let mut cfg = config();
        cfg.ehlo_keywords = EhloKeywords::ALL.without(EhloKeywords::SMTPUTF8);
        let o = check(
            &cfg,
            &[c(
                "EHLO c.example\r\nMAIL FROM:<a@example.org> SMTPUTF8\r\n",
            )],
        );
        assert!(has(&o.out, b"555 5.5.4 Unsupported option: SMTPUTF8\r\n"));
    }

    fn hops(n: usize) -> Vec<u8> {
        let mut m = "Received: from a by b;\r\n\tThu, 1 Jan 2026 00:00:00 +0000\r\n".repeat(n);
        m.push_str("Subject: loop\r\n\r\nReceived: in the body does not count\r\n.\r\n");
        m.into_bytes()
    }

    #[test]
    fn loop_detection_at_51_received_fields_not_50() {
        let o = check(
            &config(),
            &with(
                opening(),
                vec![c("DATA\r\n"), s(GO_AHEAD), c(hops(50)), s(QUEUED)],
            ),
        );
        assert_eq!(o.message_ends(), 1);
        let loop51 = vec![
            c("DATA\r\n"),
            s(GO_AHEAD),
            c(hops(51)),
            s("554 5.4.6 Too many hops: mail loop detected\r\n"),
        ];
        let o = check(&config(), &with(opening(), loop51));
        assert_eq!(o.message_ends(), 0);
        assert!(o.events.contains(&Event::MessageAbort));
        assert!(!o.closed);
    }

    #[test]
    fn max_messages_per_session() {
        let mut cfg = config();
        cfg.max_messages = 1;
        let steps = with(
            opening(),
            vec![
                c("DATA\r\nx\r\n.\r\nMAIL FROM:<a@example.org>\r\n"),
                s([
                    GO_AHEAD,
                    QUEUED,
                    b"452 4.5.3 Error: too many messages in this session\r\n",
                ]
                .concat()),
            ],
        );
        let o = check(&cfg, &steps);
        assert_eq!(o.message_ends(), 1);
        assert!(!o.closed);
    }

    #[test]
    fn error_limit_closes_with_421() {
        let mut cfg = config();
        cfg.error_limit = 3;
        let steps = vec![
            s(GREETING),
            c("FOO\r\nBAR\r\nNOOP\r\nEXPN x\r\nBAZ\r\nNOOP\r\n"),
            s(b"500 5.5.2 Error: command not recognized\r\n500 5.5.2 Error: command not recognized\r\n\
                250 2.0.0 Ok\r\n502 5.5.1 EXPN not available\r\n500 5.5.2 Error: command not recognized\r\n\
                421 4.7.0 mx.test Error: too many errors\r\n"),
        ];
        let o = check(&cfg, &steps);
        assert!(o.closed);
        assert_eq!(
            o.events.last(),
            Some(&Event::Closing(CloseReason::TooManyErrors))
        );
    }

    #[test]
    fn policy_refusals_and_failed_commit() {
        let steps = vec![
            c(
                "EHLO c.example\r\nMAIL FROM:<spammer@example.org>\r\nMAIL FROM:<tempfail@example.org>\r\n\
               RCPT TO:<b@example.com>\r\nDATA\r\nx\r\n.\r\n",
            ),
            s([
                GREETING,
                EHLO_REPLY,
                b"550 5.7.1 Sender refused\r\n",
                MAIL_OK,
                RCPT_OK,
                GO_AHEAD,
            ]
            .concat()),
            s(b"451 4.3.0 Queue busy\r\n"),
            c("RCPT TO:<b@example.com>\r\n"),
            s(b"503 5.5.1 Error: need MAIL command\r\n"),
        ];
        let o = check(&config(), &steps);
        assert_eq!(o.message_ends(), 1);
        let rejected: Vec<&str> = o
            .events
            .iter()
            .filter_map(|e| {
                if let Event::Rejected { command, .. } = e {
                    Some(command.as_str())
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(rejected, ["MAIL", "DATA", "RCPT"]);
    }

    #[test]
    fn small_commands() {
        let steps = vec![
            c("EHLO c.example\r\nVRFY x\r\nhelp\r\nNOOP hi\r\nRSET\r\nSTARTTLS\r\nAUTH PLAIN\r\nEXPN list\r\n\
               MAIL FROM:<a@example.org>\r\nMAIL FROM:<a@example.org>\r\nRSET x\r\nEHLO\r\nDATA\r\n"),
            s([GREETING, EHLO_REPLY].concat()),
            s(b"252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery\r\n\
                214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP\r\n\
                250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n\
                502 5.5.1 Error: command not implemented\r\n502 5.5.1 Error: command not implemented\r\n\
                502 5.5.1 EXPN not available\r\n250 2.1.0 Ok\r\n503 5.5.1 Error: nested MAIL command\r\n\
                501 5.5.4 Syntax: RSET\r\n501 5.5.4 Syntax: EHLO hostname\r\n503 5.5.1 Error: need RCPT command\r\n"),
            c("QUIT\r\nNOOP\r\n"),
            s(b"221 2.0.0 Bye\r\n"),
        ];
        let o = check(&config(), &steps);
        assert!(o.closed);
    }

    #[test]
    fn greeting_after_delay() {
        let mut cfg = config();
        cfg.greet_delay = Duration::from_secs(5);
        let o = check(
            &cfg,
            &[
                s(""),
                secs(4),
                s(""),
                secs(1),
                s(GREETING),
                c("NOOP\r\n"),
                s(OK),
            ],
        );
        assert!(!o.closed);
        let now = Instant::now();
        let session = Session::new(Rc::new(cfg), now);
        assert_eq!(session.poll_timeout(), Some(now + Duration::from_secs(5)));
    }

    #[test]
    fn source_route_is_dropped_but_reported() {
        let now = Instant::now();
        let mut session = Session::new(Rc::new(config()), now);
        session.handle_input(
            b"EHLO c.example\r\nMAIL FROM:<@r1.example,@r2.example:a@example.org>\r\n",
            now,
        );
        let events: Vec<Event> = std::iter::from_fn(|| session.poll_event()).collect();
        assert!(events.contains(&Event::CheckMail {
            from: "a@example.org".into(),
            params: MailParams::default()
        }));
        session.answer(Verdict::Accept, now);
        let to = Recipient::parse("b@example.com").unwrap();
        for (line, had_source_route) in [
            ("RCPT TO:<@r1.example:b@example.com>\r\n", true),
            ("RCPT TO:<b@example.com>\r\n", false),
        ] {
            session.handle_input(line.as_bytes(), now);
            let events: Vec<Event> = std::iter::from_fn(|| session.poll_event()).collect();
            assert_eq!(
                events,
                [Event::CheckRcpt {
                    to: to.clone(),
                    had_source_route,
                    params: RcptParams::default()
                }]
            );
            session.answer(Verdict::Accept, now);
        }
    }

    #[test]
    fn an_accepted_recipient_is_recorded_as_the_layer_routes_it() {
        let now = Instant::now();
        let mut session = Session::new(Rc::new(config()), now);
        session.handle_input(b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\n", now);
        while session.poll_event().is_some() {}
        session.answer(Verdict::Accept, now);
        session.handle_input(b"RCPT TO:<postmaster@[192.0.2.25]>\r\n", now);
        while session.poll_event().is_some() {}
        session.accept_rcpt("postmaster@gw.example.com".into(), now);
        session.handle_input(b"RCPT TO:<b@example.com>\r\n", now);
        while session.poll_event().is_some() {}
        session.answer(Verdict::Accept, now);
        session.handle_input(b"DATA\r\nx\r\n.\r\n", now);
        let tx = std::iter::from_fn(|| session.poll_event())
            .find_map(|e| match e {
                Event::MessageEnd(tx) => Some(tx),
                _ => None,
            })
            .expect("the message ends");
        let rcpts: Vec<&str> = tx.rcpts.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(rcpts, ["postmaster@gw.example.com", "b@example.com"]);
        let mut replies = Vec::new();
        while let Some(b) = session.poll_transmit() {
            replies.extend_from_slice(&b);
        }
        let replies = String::from_utf8(replies).unwrap();
        assert_eq!(replies.matches("250 2.1.5 Ok\r\n").count(), 2, "{replies}");

        // The same recipient twice (written two ways): 250 both times, delivered once.
        session.commit_done(Ok("ID1".into()), now);
        session.handle_input(b"MAIL FROM:<a@example.org>\r\n", now);
        while session.poll_event().is_some() {}
        session.answer(Verdict::Accept, now);
        for _ in 0..2 {
            session.handle_input(b"RCPT TO:<postmaster>\r\n", now);
            while session.poll_event().is_some() {}
            session.accept_rcpt("postmaster@gw.example.com".into(), now);
        }
        session.handle_input(b"DATA\r\nx\r\n.\r\n", now);
        let tx = std::iter::from_fn(|| session.poll_event())
            .find_map(|e| match e {
                Event::MessageEnd(tx) => Some(tx),
                _ => None,
            })
            .expect("the message ends");
        assert_eq!(tx.rcpts.len(), 1);
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
        let cfg = ServerConfig::from_service("mx.test", &crate::config::Service::default());
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

    // ---- bad input: one test per row ----

    /// `bad_input!(name: tweak, steps, expect [...], absent [...], survives, committed)`.
    /// Checks the replies in `expect` appear in order, none of `absent` appears, whether
    /// the session is still open (a survivor must then answer NOOP), and how many
    /// messages were committed.
    macro_rules! bad_input {
        ($($name:ident: $tweak:expr, $steps:expr, expect [$($e:expr),* $(,)?], absent [$($a:expr),* $(,)?],
           survives $survives:expr, committed $n:expr;)*) => {$(
            #[test]
            fn $name() {
                let mut cfg = config();
                let tweak: fn(&mut ServerConfig) = $tweak;
                tweak(&mut cfg);
                let mut steps: Vec<Step> = $steps;
                if $survives {
                    steps.push(c("NOOP\r\n"));
                }
                let o = check(&cfg, &steps);
                let expect: &[&[u8]] = &[$($e.as_ref()),*];
                assert!(in_order(&o.out, expect), "{}", String::from_utf8_lossy(&o.out));
                let absent: &[&[u8]] = &[$($a.as_ref()),*];
                for a in absent {
                    assert!(!has(&o.out, a), "{} in {}", String::from_utf8_lossy(a), String::from_utf8_lossy(&o.out));
                }
                assert_eq!(o.closed, !$survives, "closed");
                if $survives {
                    assert!(o.out.ends_with(OK), "{}", String::from_utf8_lossy(&o.out));
                }
                assert_eq!(o.message_ends(), $n, "committed messages");
                let begins = o.count(|e| matches!(e, Event::MessageBegin));
                let aborts = o.count(|e| matches!(e, Event::MessageAbort));
                assert_eq!(begins, $n + aborts, "every begun message ends or aborts");
            }
        )*};
    }

    fn same(_: &mut ServerConfig) {}

    fn in_data(content: &[u8]) -> Vec<Step> {
        with(opening(), vec![c("DATA\r\n"), s(GO_AHEAD), c(content)])
    }

    const BARE: &[u8] = b"550 5.5.2 Message refused: bare <CR> or <LF> in data\r\n";

    bad_input! {
        command_line_over_512_octets: same,
            vec![c(format!("EHLO {}\r\n", "a".repeat(600))), c("HELO c.example\r\n")],
            expect [b"500 5.5.2 Error: line too long\r\n", b"250 mx.test\r\n"], absent [b"501"],
            survives true, committed 0;
        command_line_of_exactly_512_octets: same,
            vec![c(format!("NOOP {}\r\n", "a".repeat(505)))],
            expect [GREETING], absent [b"500"],
            survives true, committed 0;
        command_line_of_513_octets: same,
            vec![c(format!("NOOP {}\r\n", "a".repeat(506)))],
            expect [b"500 5.5.2 Error: line too long\r\n"], absent [],
            survives true, committed 0;
        text_line_over_the_limit: |c| c.max_line_length = 100,
            in_data(format!("Subject: x\r\n\r\n{}\r\nshort\r\n.\r\n", "b".repeat(99)).as_bytes()),
            expect [b"550 5.6.0 Message refused: line longer than 100 octets\r\n"], absent [QUEUED],
            survives true, committed 0;
        bare_lf_in_data: same, in_data(b"a\r\nb\nc\r\n.\r\n"),
            expect [BARE], absent [QUEUED], survives true, committed 0;
        bare_cr_in_data: same, in_data(b"a\rb\r\n.\r\n"),
            expect [BARE], absent [QUEUED], survives true, committed 0;
        bare_lf_in_command: same, vec![c("NOOP\nNOOP\r\n")],
            expect [b"500 5.5.2 Error: bare <LF> received\r\n", OK], absent [],
            survives true, committed 0;
        bare_cr_in_command: same, vec![c("NO\rOP\r\n")],
            expect [b"500 5.5.2 Error: bare <CR> received\r\n"], absent [],
            survives true, committed 0;
        end_of_data_with_bare_lf_does_not_end: same,
            in_data(b"hello\n.\nVRFY x\r\nHELP\r\n.\r\n"),
            expect [BARE], absent [QUEUED, b"252", b"214"], survives true, committed 0;
        end_of_data_with_bare_cr_does_not_end: same,
            in_data(b"hello\r.\rVRFY x\r\n.\r\n"),
            expect [BARE], absent [QUEUED, b"252"], survives true, committed 0;
        end_of_data_lf_then_crlf_does_not_end: same,
            in_data(b"hello\n.\r\nVRFY x\r\n.\r\n"),
            expect [BARE], absent [QUEUED, b"252"], survives true, committed 0;
        end_of_data_crlf_then_lf_does_not_end: same,
            in_data(b"hello\r\n.\nVRFY x\r\n.\r\n"),
            expect [BARE], absent [QUEUED, b"252"], survives true, committed 0;
        bare_lf_in_bdat_chunk: same,
            with(opening(), vec![c("BDAT 3\r\na\nb"), c("BDAT 2 LAST\r\nc\r")]),
            expect [BARE, b"503 5.5.1 Error: need MAIL command\r\n"], absent [QUEUED],
            survives true, committed 0;
        lone_cr_at_end_of_last_bdat_chunk: same,
            with(opening(), vec![c("BDAT 2 LAST\r\na\r")]),
            expect [BARE], absent [QUEUED], survives true, committed 0;
        nul_in_data: same, in_data(b"a\0b\r\n.\r\n"),
            expect [b"550 5.6.0 Message refused: NUL in data\r\n"], absent [QUEUED],
            survives true, committed 0;
        nul_in_command: same, vec![c("NO\0OP\r\n")],
            expect [b"500 5.5.2 Error: NUL in command\r\n"], absent [],
            survives true, committed 0;
        declared_size_over_the_limit: same,
            vec![c("EHLO c.example\r\nMAIL FROM:<a@example.org> SIZE=10001\r\nMAIL FROM:<a@example.org> SIZE=10000\r\n")],
            expect [b"552 5.3.4 Message size exceeds fixed limit\r\n", MAIL_OK], absent [],
            survives true, committed 0;
        data_over_the_size_limit: |c| c.max_message_size = 100,
            in_data(format!("{}.\r\n", "0123456789abcdefghi\r\n".repeat(6)).as_bytes()),
            expect [GO_AHEAD, b"552 5.3.4 Message size exceeds fixed limit\r\n"], absent [QUEUED],
            survives true, committed 0;
        bdat_over_the_size_limit: |c| c.max_message_size = 10,
            with(opening(), vec![c("BDAT 8\r\n12345678BDAT 8 LAST\r\n12345678")]),
            expect [b"250 2.0.0 8 octets received\r\n", b"552 5.3.4 Message size exceeds fixed limit\r\n"],
            absent [QUEUED], survives true, committed 0;
        more_recipients_than_the_limit: |c| c.max_recipients = 2,
            with(opening(), vec![c("RCPT TO:<c@example.com>\r\nRCPT TO:<d@example.com>\r\nDATA\r\nx\r\n.\r\n")]),
            expect [RCPT_OK, RCPT_OK, b"452 4.5.3 Error: too many recipients\r\n", GO_AHEAD, QUEUED], absent [],
            survives true, committed 1;
        mail_before_ehlo: same, vec![c("MAIL FROM:<a@example.org>\r\n")],
            expect [b"503 5.5.1 Error: send HELO/EHLO first\r\n"], absent [],
            survives true, committed 0;
        data_without_rcpt: same,
            vec![c("EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nDATA\r\n")],
            expect [b"503 5.5.1 Error: need RCPT command\r\n"], absent [GO_AHEAD],
            survives true, committed 0;
        pipelined_commands_after_a_failing_mail: same,
            vec![c("EHLO c.example\r\nMAIL FROM:<a@@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n\
                    Subject: x\r\n\r\nbody\r\n.\r\n")],
            expect [b"501 5.1.7 Bad sender address syntax\r\n", b"503 5.5.1 Error: need MAIL command\r\n",
                    b"503 5.5.1 Error: need MAIL command\r\n", b"500 5.5.2 Error: command not recognized\r\n",
                    b"500 5.5.2 Error: command not recognized\r\n", b"500 5.5.2 Error: command not recognized\r\n",
                    b"500 5.5.2 Error: command not recognized\r\n"],
            absent [GO_AHEAD, MAIL_OK, RCPT_OK], survives true, committed 0;
        bad_recipient_syntax: same,
            with(opening(), vec![c("RCPT TO:<b@exa mple.com>\r\n")]),
            expect [b"501 5.1.3 Bad recipient address syntax\r\n"], absent [], survives true, committed 0;
        talking_before_the_greeting: |c| c.greet_delay = Duration::from_secs(5),
            vec![c("EHLO c.example\r\n"), secs(10), c("NOOP\r\n")],
            expect [b"554 5.5.1 Error: talked before greeting\r\n"], absent [b"220", b"250"],
            survives false, committed 0;
        silent_client_command_timeout: same,
            vec![c("EHLO c.example\r\nMAIL FROM:<a@example.org>\r\n"), secs(299), c("NO"), secs(299), secs(1)],
            expect [MAIL_OK, b"421 4.4.2 mx.test Error: timeout exceeded\r\n"], absent [OK],
            survives false, committed 0;
        silent_client_data_timeout: same,
            with(in_data(b"Subject: x\r\n"), vec![secs(179), c("more\r\n"), secs(179), secs(1), c(".\r\n")]),
            expect [GO_AHEAD, b"421 4.4.2 mx.test Error: timeout exceeded\r\n"], absent [QUEUED],
            survives false, committed 0;
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

    // ---- STARTTLS (RFC 3207) ----

    const EHLO_TLS_REPLY: &[u8] =
        b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n\
        250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
    const READY: &[u8] = b"220 2.0.0 Ready to start TLS\r\n";
    const BYE: &[u8] = b"221 2.0.0 Bye\r\n";
    const MUST_TLS: &[u8] = b"530 5.7.0 Must issue a STARTTLS command first\r\n";

    fn tls_config() -> ServerConfig {
        ServerConfig {
            tls_available: true,
            ..config()
        }
    }

    /// Greeting, EHLO with STARTTLS offered, STARTTLS and its 220.
    fn up_to_starttls() -> Vec<Step> {
        vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            s(EHLO_TLS_REPLY),
            c("STARTTLS\r\n"),
            s(READY),
        ]
    }

    /// A whole transaction from EHLO to QUIT, message `hi`.
    fn transaction_after_ehlo() -> Vec<Step> {
        vec![
            c("MAIL FROM:<a@example.org>\r\n"),
            s(MAIL_OK),
            c("RCPT TO:<b@example.com>\r\n"),
            s(RCPT_OK),
            c("DATA\r\n"),
            s(GO_AHEAD),
            c("hi\r\n.\r\n"),
            s(QUEUED),
            c("QUIT\r\n"),
            s(BYE),
        ]
    }

    fn transactions(o: &Outcome) -> Vec<&Transaction> {
        o.events
            .iter()
            .filter_map(|e| match e {
                Event::MessageEnd(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    fn starttls_requests(o: &Outcome) -> usize {
        o.count(|e| matches!(e, Event::StartTlsRequested))
    }

    #[test]
    fn input_pipelined_after_starttls_is_never_processed() {
        let steps = vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            s(EHLO_TLS_REPLY),
            c("STARTTLS\r\nNOOP\r\n"),
            s(READY),
            Step::Handshake(true),
            c("QUIT\r\n"),
            s(BYE),
        ];
        let o = check_tls(&tls_config(), TlsMode::default(), &steps);
        assert_eq!(o.out, [GREETING, EHLO_TLS_REPLY, READY, BYE].concat());
        assert!(o.tls && o.closed);
        assert_eq!(starttls_requests(&o), 1);
    }

    #[test]
    fn input_arriving_before_the_handshake_ends_is_never_processed() {
        let steps = with(
            up_to_starttls(),
            vec![
                c("NOOP\r\nMAIL FROM:<a@example.org>\r\n"),
                Step::Handshake(true),
                c("QUIT\r\n"),
                s(BYE),
            ],
        );
        let o = check_tls(&tls_config(), TlsMode::default(), &steps);
        assert_eq!(o.out, [GREETING, EHLO_TLS_REPLY, READY, BYE].concat());
        assert_eq!(o.count(|e| matches!(e, Event::CheckMail { .. })), 0);
    }

    #[test]
    fn tls_forgets_the_ehlo() {
        let steps = with(
            up_to_starttls(),
            vec![
                Step::Handshake(true),
                c("MAIL FROM:<a@example.org>\r\n"),
                s("503 5.5.1 Error: send HELO/EHLO first\r\n"),
            ],
        );
        let o = check_tls(&tls_config(), TlsMode::default(), &steps);
        assert!(o.tls);
        assert_eq!(o.count(|e| matches!(e, Event::CheckMail { .. })), 0);
    }

    #[test]
    fn starttls_offered_before_tls_only_and_the_transaction_carries_tls() {
        let steps = with(
            up_to_starttls(),
            with(
                vec![
                    Step::Handshake(true),
                    c("EHLO client.example\r\n"),
                    s(EHLO_REPLY),
                    c("STARTTLS\r\n"),
                    s("503 5.5.1 Error: TLS already active\r\n"),
                ],
                transaction_after_ehlo(),
            ),
        );
        let o = check_tls(&tls_config(), TlsMode::default(), &steps);
        assert!(o.tls);
        assert_eq!(starttls_requests(&o), 1);
        let t = transactions(&o);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].tls, Some(tls_info()));
        assert_eq!(o.committed(), vec![b"hi\r\n".to_vec()]);
    }

    #[test]
    fn handshake_time_is_not_a_command_timeout() {
        let steps = with(
            up_to_starttls(),
            with(
                vec![
                    secs(1000),
                    Step::Handshake(true),
                    c("EHLO client.example\r\n"),
                    s(EHLO_REPLY),
                ],
                transaction_after_ehlo(),
            ),
        );
        let o = check_tls(&tls_config(), TlsMode::default(), &steps);
        assert_eq!(o.message_ends(), 1);
        assert_eq!(
            o.count(|e| matches!(e, Event::Closing(CloseReason::Quit))),
            1
        );
    }

    #[test]
    fn failed_handshake_closes_quietly() {
        let steps = with(
            up_to_starttls(),
            vec![Step::Handshake(false), c("QUIT\r\n")],
        );
        let o = check_tls(&tls_config(), TlsMode::default(), &steps);
        assert_eq!(o.out, [GREETING, EHLO_TLS_REPLY, READY].concat());
        assert!(o.closed && !o.tls);
        assert_eq!(
            o.events.last(),
            Some(&Event::Closing(CloseReason::TlsFailed))
        );
    }

    #[test]
    fn starttls_refusals() {
        // With a parameter.
        let o = check_tls(
            &tls_config(),
            TlsMode::default(),
            &[
                s(GREETING),
                c("EHLO client.example\r\n"),
                s(EHLO_TLS_REPLY),
                c("STARTTLS now\r\n"),
                s("501 5.5.4 Syntax error (no parameters allowed)\r\n"),
            ],
        );
        assert_eq!(starttls_requests(&o), 0);
        // Not offered: no certificate, or the keyword is not allowed.
        let mut no_keyword = tls_config();
        no_keyword.ehlo_keywords = EhloKeywords::ALL.without(EhloKeywords::STARTTLS);
        for cfg in [config(), no_keyword] {
            let o = check_tls(
                &cfg,
                TlsMode::default(),
                &[
                    s(GREETING),
                    c("EHLO client.example\r\n"),
                    s(EHLO_REPLY),
                    c("STARTTLS\r\n"),
                    s("502 5.5.1 Error: command not implemented\r\n"),
                ],
            );
            assert_eq!(starttls_requests(&o), 0);
        }
        // Before EHLO, and after HELO (STARTTLS is an extension).
        let o = check_tls(
            &tls_config(),
            TlsMode::default(),
            &[
                s(GREETING),
                c("STARTTLS\r\n"),
                s("503 5.5.1 Error: send EHLO first\r\n"),
                c("HELO client.example\r\n"),
                s("250 mx.test\r\n"),
                c("STARTTLS\r\n"),
                s("503 5.5.1 Error: send EHLO first\r\n"),
            ],
        );
        assert_eq!(starttls_requests(&o), 0);
        // Inside a transaction; allowed again after RSET.
        let o = check_tls(
            &tls_config(),
            TlsMode::default(),
            &[
                s(GREETING),
                c("EHLO client.example\r\n"),
                s(EHLO_TLS_REPLY),
                c("MAIL FROM:<a@example.org>\r\n"),
                s(MAIL_OK),
                c("STARTTLS\r\n"),
                s("503 5.5.1 Error: MAIL transaction in progress\r\n"),
                c("RSET\r\n"),
                s(OK),
                c("STARTTLS\r\n"),
                s(READY),
            ],
        );
        assert_eq!(starttls_requests(&o), 1);
        assert!(!o.tls);
    }

    #[test]
    fn tls_unavailable_answers_454_and_goes_on_in_plaintext() {
        let refuse = TlsMode {
            refuse: true,
            ..TlsMode::default()
        };
        let steps = with(
            vec![
                s(GREETING),
                c("EHLO client.example\r\n"),
                s(EHLO_TLS_REPLY),
                c("STARTTLS\r\nNOOP\r\n"),
                s("454 4.7.0 TLS not available due to temporary reason\r\n"),
                s(OK),
            ],
            transaction_after_ehlo(),
        );
        let o = check_tls(&tls_config(), refuse, &steps);
        assert!(!o.tls);
        let t = transactions(&o);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].tls, None);
    }

    #[test]
    fn require_tls_refuses_mail_until_tls() {
        let cfg = ServerConfig {
            require_tls: true,
            ..tls_config()
        };
        let steps = with(
            vec![
                s(GREETING),
                c("EHLO client.example\r\n"),
                s(EHLO_TLS_REPLY),
                c("MAIL FROM:<a@example.org>\r\n"),
                s(MUST_TLS),
                c("RCPT TO:<b@example.com>\r\n"),
                s(MUST_TLS),
                c("DATA\r\n"),
                s(MUST_TLS),
                c("BDAT 6 LAST\r\nNOOP\r\n"),
                s(MUST_TLS),
                c("NOOP\r\n"),
                s(OK),
                c("STARTTLS\r\n"),
                s(READY),
                Step::Handshake(true),
                c("EHLO client.example\r\n"),
                s(EHLO_REPLY),
            ],
            transaction_after_ehlo(),
        );
        let o = check_tls(&cfg, TlsMode::default(), &steps);
        assert_eq!(o.count(|e| matches!(e, Event::CheckMail { .. })), 1);
        assert_eq!(o.count(|e| matches!(e, Event::MessageBegin)), 1);
        assert_eq!(transactions(&o)[0].tls, Some(tls_info()));
    }

    #[test]
    fn implicit_tls_never_offers_starttls_and_meets_require_tls() {
        let implicit = TlsMode {
            implicit: true,
            ..TlsMode::default()
        };
        let cfg = ServerConfig {
            require_tls: true,
            ..tls_config()
        };
        let steps = with(
            vec![
                s(GREETING),
                c("EHLO client.example\r\n"),
                s(EHLO_REPLY),
                c("STARTTLS\r\n"),
                s("503 5.5.1 Error: TLS already active\r\n"),
            ],
            transaction_after_ehlo(),
        );
        let o = check_tls(&cfg, implicit, &steps);
        assert!(o.tls);
        assert_eq!(starttls_requests(&o), 0);
        assert_eq!(transactions(&o)[0].tls, Some(tls_info()));
    }

    #[test]
    fn tls_calls_out_of_order_are_ignored() {
        let now = Instant::now();
        let mut session = Session::new(Rc::new(tls_config()), now);
        let (mut out, mut events) = (Vec::new(), Vec::new());
        drain(&mut session, now, &mut out, &mut events);
        session.start_tls(now);
        session.tls_unavailable(now);
        session.tls_established(tls_info(), now);
        session.tls_failed(now);
        assert!(session.poll_transmit().is_none());
        assert!(session.poll_event().is_none());
        assert!(!session.is_tls() && !session.is_closed());
        assert_eq!(session.tls(), None);
        // A pending STARTTLS is not answered by `answer` or `commit_done` either.
        session.handle_input(b"EHLO client.example\r\nSTARTTLS\r\n", now);
        while session.poll_event().is_some() {}
        session.poll_transmit();
        session.answer(Verdict::Accept, now);
        session.commit_done(Ok("X".into()), now);
        assert!(session.poll_transmit().is_none());
        assert!(!session.wants_input());
        session.start_tls(now);
        assert_eq!(session.poll_transmit(), Some(READY.to_vec()));
    }

    // ---- generated sessions ----

    /// xorshift64: a tiny deterministic generator for test inputs.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const PIECES: &[&[u8]] = &[
        b"EHLO c.example\r\n",
        b"HELO c.example\r\n",
        b"MAIL FROM:<a@example.org>\r\n",
        b"MAIL FROM:<> SIZE=100 BODY=8BITMIME\r\n",
        b"MAIL FROM:<spammer@example.org>\r\n",
        b"MAIL FROM:<tempfail@example.org>\r\n",
        b"RCPT TO:<b@example.com>\r\n",
        b"RCPT TO:<nobody@example.com> NOTIFY=NEVER\r\n",
        b"RCPT TO:<postmaster>\r\n",
        b"DATA\r\n",
        b"Subject: x\r\n\r\n",
        b"..dots\r\n",
        b".\r\n",
        b"\r\n.\r\n",
        b"BDAT 7\r\n",
        b"BDAT 3 LAST\r\n",
        b"BDAT 0 LAST\r\n",
        b"RSET\r\n",
        b"NOOP\r\n",
        b"VRFY x\r\n",
        b"QUIT\r\n",
        b"\n",
        b"\r",
        b"\0",
        b"Received: x\r\n",
        b"\xff\xfe",
        b"bdat 99999999999999 last\r\n",
        b"MAIL FROM:<\xc3\xa9@example.org> SMTPUTF8\r\n",
        b"STARTTLS\r\n",
        b"STARTTLS\r\nMAIL FROM:<a@example.org>\r\n",
        b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n",
        b"AUTH LOGIN\r\n",
        b"dXNlcg==\r\n",
        b"cGFzcw==\r\n",
        b"AUTH SCRAM-SHA-256 c2NyYW0=\r\n",
        b"AUTH CRAM-MD5\r\n",
        b"AUTH EXTERNAL =\r\n",
        b"*\r\n",
        b"MAIL FROM:<a@example.org> AUTH=<>\r\n",
    ];

    #[test]
    fn generated_sessions_never_panic_and_reply_well() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for round in 0..300 {
            let mut cfg = config();
            cfg.max_line_length = 20 + rng.below(100) as u32;
            cfg.max_message_size = 10 + rng.below(300) as u64;
            cfg.max_recipients = 1 + rng.below(3) as u32;
            cfg.error_limit = rng.below(12) as u32;
            cfg.max_messages = rng.below(4) as u32;
            cfg.tls_available = rng.below(2) == 0;
            cfg.require_tls = rng.below(3) == 0;
            if rng.below(2) == 0 {
                cfg.auth_mechanisms = auth_config().auth_mechanisms;
                cfg.auth_needs_tls = auth_config().auth_needs_tls;
                cfg.require_auth = rng.below(3) == 0;
            }
            let mut now = Instant::now();
            let mut session = Session::new(Rc::new(cfg), now);
            let (mut out, mut events) = (Vec::new(), Vec::new());
            drain(&mut session, now, &mut out, &mut events);
            for _ in 0..rng.below(40) {
                let mut bytes = PIECES[rng.below(PIECES.len())].to_vec();
                if rng.below(10) == 0 {
                    bytes.extend((0..rng.below(600)).map(|_| b"ab\r\n."[rng.below(5)]));
                }
                let cut = rng.below(bytes.len() + 1);
                for part in [&bytes[..cut], &bytes[cut..]] {
                    session.handle_input(part, now);
                    drain(&mut session, now, &mut out, &mut events);
                }
                if rng.below(20) == 0 {
                    now += Duration::from_secs(rng.below(400) as u64);
                    session.handle_timeout(now);
                    drain(&mut session, now, &mut out, &mut events);
                }
                // The layer's handshake ends, whether or not one is under way.
                match rng.below(8) {
                    0 => session.tls_established(tls_info(), now),
                    1 => session.tls_failed(now),
                    _ => {}
                }
                drain(&mut session, now, &mut out, &mut events);
            }
            assert!(
                well_formed(&out),
                "round {round}: {}",
                String::from_utf8_lossy(&out)
            );
            // Messages begin and end (or abort) in pairs, and nothing follows Closing.
            let mut open = false;
            for (i, e) in events.iter().enumerate() {
                match e {
                    Event::MessageBegin => {
                        assert!(!open, "round {round}: nested begin");
                        open = true;
                    }
                    Event::MessageData(_) => assert!(open, "round {round}: data outside a message"),
                    Event::MessageEnd(t) => {
                        assert!(open, "round {round}: end outside a message");
                        assert!(!t.rcpts.is_empty());
                        assert_eq!(t.mail_auth.is_some(), t.mail_params.auth.is_some());
                        open = false;
                    }
                    Event::MessageAbort => {
                        assert!(open, "round {round}: abort outside a message");
                        open = false;
                    }
                    Event::Closing(_) => {
                        assert_eq!(i, events.len() - 1, "round {round}: events after Closing");
                        assert!(!open, "round {round}: closed with a message open");
                    }
                    _ => {}
                }
            }
            assert!(session.input.len() <= MAX_PENDING_INPUT);
        }
    }

    // ---- AUTH (RFC 4954) ----

    const EHLO_AUTH_REPLY: &[u8] =
        b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n\
        250-ENHANCEDSTATUSCODES\r\n250-AUTH PLAIN LOGIN SCRAM-SHA-256\r\n250-DSN\r\n\
        250-SMTPUTF8\r\n250 CHUNKING\r\n";
    const AUTH_OK: &[u8] = b"235 2.7.0 Authentication successful\r\n";
    const AUTH_BAD: &[u8] = b"535 5.7.8 Authentication credentials invalid\r\n";
    /// PLAIN initial response for `user`/`pass`.
    const PLAIN_USER: &str = "AHVzZXIAcGFzcw==";

    /// Every mechanism, CRAM-MD5 only under TLS.
    fn auth_config() -> ServerConfig {
        ServerConfig {
            auth_mechanisms: ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256", "EXTERNAL"]
                .map(String::from)
                .to_vec(),
            auth_needs_tls: vec!["cram-md5".into()],
            ..config()
        }
    }

    fn auth_starts(o: &Outcome) -> Vec<(String, Option<Vec<u8>>)> {
        o.events
            .iter()
            .filter_map(|e| match e {
                Event::AuthStart { mechanism, initial } => {
                    Some((mechanism.clone(), initial.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn auth_responses(o: &Outcome) -> Vec<Vec<u8>> {
        o.events
            .iter()
            .filter_map(|e| match e {
                Event::AuthResponse(line) => Some(line.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn auth_plain_with_initial_response_then_a_transaction() {
        let steps = vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            s(EHLO_AUTH_REPLY),
            c(format!("auth plain {PLAIN_USER}\r\n")),
            s(AUTH_OK),
            c("MAIL FROM:<a@example.org> AUTH=a+2Bb@example.org\r\n"),
            s(MAIL_OK),
            c("RCPT TO:<b@example.com>\r\nDATA\r\n"),
            s([RCPT_OK, GO_AHEAD].concat()),
            c("hi\r\n.\r\n"),
            s(QUEUED),
        ];
        let o = check(&auth_config(), &steps);
        assert_eq!(
            auth_starts(&o),
            vec![("PLAIN".into(), Some(PLAIN_USER.as_bytes().to_vec()))]
        );
        assert_eq!(o.user.as_deref(), Some("user"));
        let t = transactions(&o);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].auth_user.as_deref(), Some("user"));
        assert_eq!(t[0].mail_auth.as_deref(), Some("a+b@example.org"));
        assert_eq!(t[0].mail_params.auth.as_deref(), Some("a+b@example.org"));
    }

    #[test]
    fn auth_login_with_two_challenges() {
        let steps = vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            s(EHLO_AUTH_REPLY),
            c("AUTH LOGIN\r\n"),
            s("334 VXNlcm5hbWU6\r\n"),
            c("dXNlcg==\r\n"),
            s("334 UGFzc3dvcmQ6\r\n"),
            c("cGFzcw==\r\n"),
            s(AUTH_OK),
            c("MAIL FROM:<a@example.org>\r\n"),
            s(MAIL_OK),
            c("RCPT TO:<b@example.com>\r\nDATA\r\nhi\r\n.\r\n"),
            s([RCPT_OK, GO_AHEAD, QUEUED].concat()),
        ];
        let o = check(&auth_config(), &steps);
        assert_eq!(auth_starts(&o), vec![("LOGIN".into(), None)]);
        assert_eq!(
            auth_responses(&o),
            vec![b"dXNlcg==".to_vec(), b"cGFzcw==".to_vec()]
        );
        assert_eq!(o.user.as_deref(), Some("user"));
        let t = transactions(&o);
        assert_eq!(t[0].auth_user.as_deref(), Some("user"));
        assert_eq!(t[0].mail_auth, None);
    }

    #[test]
    fn auth_success_with_final_data_needs_an_empty_line() {
        let steps = vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            s(EHLO_AUTH_REPLY),
            c("AUTH SCRAM-SHA-256 c2NyYW0=\r\n"),
            s("334 dj14eXo=\r\n"),
            c("\r\n"),
            s(AUTH_OK),
        ];
        let o = check(&auth_config(), &steps);
        assert_eq!(o.user.as_deref(), Some("user"));
        assert!(auth_responses(&o).is_empty());

        let steps = vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            s(EHLO_AUTH_REPLY),
            c("AUTH SCRAM-SHA-256 c2NyYW0=\r\n"),
            s("334 dj14eXo=\r\n"),
            c("c2NyYW0=\r\n"),
            s("501 5.5.2 Error: expected an empty line\r\n"),
            c("MAIL FROM:<a@example.org> AUTH=<>\r\n"),
            s(MAIL_OK),
        ];
        let mut cfg = auth_config();
        cfg.require_auth = false;
        let o = check(&cfg, &steps);
        assert_eq!(o.user, None);
        let mail = o.events.iter().find_map(|e| match e {
            Event::CheckMail { params, .. } => Some(params.auth.clone()),
            _ => None,
        });
        assert_eq!(mail, Some(Some(String::new())));
    }

    #[test]
    fn auth_cancelled_and_the_session_goes_on() {
        let steps = vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            s(EHLO_AUTH_REPLY),
            c("AUTH PLAIN\r\n"),
            s("334 \r\n"),
            c("*\r\n"),
            s("501 5.7.0 Authentication aborted\r\n"),
            c("NOOP\r\n"),
            s(OK),
            c("AUTH PLAIN =\r\n"),
            s(AUTH_BAD),
            c("AUTH PLAIN !!not-base64\r\n"),
            s(AUTH_BAD),
            c("AUTH PLAIN\r\n"),
            s("334 \r\n"),
            c(format!("{PLAIN_USER}\r\n")),
            s(AUTH_OK),
        ];
        let o = check(&auth_config(), &steps);
        assert_eq!(auth_responses(&o), vec![b"*".to_vec(), PLAIN_USER.into()]);
        // `=` and bad base64 go to the SASL layer as sent.
        let starts = auth_starts(&o);
        assert_eq!(starts[1].1.as_deref(), Some(&b"="[..]));
        assert_eq!(starts[2].1.as_deref(), Some(&b"!!not-base64"[..]));
        assert_eq!(o.user.as_deref(), Some("user"));
    }

    #[test]
    fn auth_refusals() {
        let steps = vec![
            s(GREETING),
            c(format!("AUTH PLAIN {PLAIN_USER}\r\n")),
            s("503 5.5.1 Error: send EHLO first\r\n"),
            c("HELO client.example\r\n"),
            Step::Any,
            c(format!("AUTH PLAIN {PLAIN_USER}\r\n")),
            s("503 5.5.1 Error: send EHLO first\r\n"),
            c("EHLO client.example\r\n"),
            s(EHLO_AUTH_REPLY),
            c("AUTH\r\nAUTH PLAIN a b\r\nAUTH PL\x01AIN\r\n"),
            s("501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n\
               501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n\
               501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n"),
            c("AUTH DIGEST-MD5\r\nAUTH EXTERNAL =\r\n"),
            s("504 5.5.4 Unrecognized authentication type\r\n\
               504 5.5.4 Unrecognized authentication type\r\n"),
            c("AUTH CRAM-MD5\r\n"),
            s("538 5.7.11 Encryption required for requested authentication mechanism\r\n"),
            c("MAIL FROM:<a@example.org>\r\n"),
            s(MAIL_OK),
            c(format!("AUTH PLAIN {PLAIN_USER}\r\n")),
            s("503 5.5.1 Error: MAIL transaction in progress\r\n"),
            c(format!("RSET\r\nAUTH PLAIN {PLAIN_USER}\r\n")),
            s([OK, AUTH_OK].concat()),
            c(format!("AUTH PLAIN {PLAIN_USER}\r\n")),
            s("503 5.5.1 Error: already authenticated\r\n"),
        ];
        let cfg = ServerConfig {
            error_limit: 0,
            ..auth_config()
        };
        let o = check(&cfg, &steps);
        assert_eq!(auth_starts(&o).len(), 1);
        assert_eq!(o.count(|e| matches!(e, Event::Rejected { .. })), 10);
        assert_eq!(o.user.as_deref(), Some("user"));
        assert!(!o.closed);
    }

    #[test]
    fn auth_not_offered_without_mechanisms_or_the_keyword() {
        let steps = vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            s(EHLO_REPLY),
            c(format!("AUTH PLAIN {PLAIN_USER}\r\n")),
            s("502 5.5.1 Error: command not implemented\r\n"),
            c("MAIL FROM:<a@example.org> AUTH=<>\r\n"),
            s("555 5.5.4 Unsupported option: AUTH\r\n"),
        ];
        check(&config(), &steps);
        let cfg = ServerConfig {
            ehlo_keywords: EhloKeywords::ALL.without(EhloKeywords::AUTH),
            ..auth_config()
        };
        let o = check(&cfg, &steps);
        assert!(auth_starts(&o).is_empty());
        // Only TLS-restricted mechanisms: nothing to offer before TLS, but AUTH exists.
        let cfg = ServerConfig {
            auth_mechanisms: vec!["CRAM-MD5".into()],
            ..auth_config()
        };
        let steps = vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            s(EHLO_REPLY),
            c(format!("AUTH PLAIN {PLAIN_USER}\r\nAUTH cram-md5\r\n")),
            s("504 5.5.4 Unrecognized authentication type\r\n\
               538 5.7.11 Encryption required for requested authentication mechanism\r\n"),
            c("MAIL FROM:<a@example.org> AUTH=<>\r\n"),
            s("555 5.5.4 Unsupported option: AUTH\r\n"),
        ];
        check(&cfg, &steps);
    }

    #[test]
    fn restricted_mechanisms_and_external_after_tls() {
        let cfg = ServerConfig {
            tls_available: true,
            ..auth_config()
        };
        let steps = vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            Step::Any,
            c("AUTH EXTERNAL =\r\nAUTH CRAM-MD5\r\n"),
            s("504 5.5.4 Unrecognized authentication type\r\n\
               538 5.7.11 Encryption required for requested authentication mechanism\r\n"),
            c("STARTTLS\r\n"),
            s(READY),
            Step::Handshake(true),
            c("EHLO client.example\r\n"),
            Step::Any,
            c("AUTH CRAM-MD5\r\n"),
            s("334 \r\n"),
            c(format!("{PLAIN_USER}\r\n")),
            s(AUTH_OK),
        ];
        let o = check(&cfg, &steps);
        let before = b"250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n\
            250-AUTH PLAIN LOGIN SCRAM-SHA-256\r\n250-DSN\r\n";
        let after = b"250-ENHANCEDSTATUSCODES\r\n\
            250-AUTH PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256 EXTERNAL\r\n250-DSN\r\n";
        assert!(in_order(&o.out, &[before, READY, after]));
        assert_eq!(auth_starts(&o), vec![("CRAM-MD5".into(), None)]);
        assert_eq!(o.user.as_deref(), Some("user"));

        // Under TLS without a client certificate EXTERNAL is neither offered nor usable.
        let no_cert = TlsMode {
            implicit: true,
            no_client_cert: true,
            ..TlsMode::default()
        };
        let steps = vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            Step::Any,
            c("AUTH EXTERNAL =\r\n"),
            s("504 5.5.4 Unrecognized authentication type\r\n"),
        ];
        let o = check_tls(&cfg, no_cert, &steps);
        assert!(has(
            &o.out,
            b"250-AUTH PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256\r\n"
        ));
        let implicit = TlsMode {
            implicit: true,
            ..TlsMode::default()
        };
        let steps = vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            Step::Any,
            c("AUTH EXTERNAL =\r\n"),
            s(AUTH_BAD),
        ];
        let o = check_tls(&cfg, implicit, &steps);
        assert_eq!(
            auth_starts(&o),
            vec![("EXTERNAL".into(), Some(b"=".to_vec()))]
        );
    }

    #[test]
    fn tls_forgets_authentication() {
        let cfg = ServerConfig {
            tls_available: true,
            require_auth: true,
            ..auth_config()
        };
        let steps = vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            Step::Any,
            c(format!("AUTH PLAIN {PLAIN_USER}\r\n")),
            s(AUTH_OK),
            c("STARTTLS\r\n"),
            s(READY),
            Step::Handshake(true),
            c("EHLO client.example\r\n"),
            Step::Any,
            c("MAIL FROM:<a@example.org>\r\n"),
            s("530 5.7.0 Authentication required\r\n"),
        ];
        let o = check(&cfg, &steps);
        assert!(o.tls);
        assert_eq!(o.user, None);
    }

    #[test]
    fn response_line_over_the_rfc_4954_bound() {
        let at_bound = "A".repeat(MAX_AUTH_LINE);
        let over = "A".repeat(MAX_AUTH_LINE + 1);
        let steps = vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            s(EHLO_AUTH_REPLY),
            c("AUTH PLAIN\r\n"),
            s("334 \r\n"),
            c(format!("{at_bound}\r\n")),
            s(AUTH_BAD),
            c("AUTH PLAIN\r\n"),
            s("334 \r\n"),
            c(format!("{over}\r\n")),
            s("500 5.5.6 Authentication Exchange line is too long\r\n"),
            c("AUTH PLAIN\r\n"),
            s("334 \r\n"),
            c("bare\n"),
            s("500 5.5.2 Error: bare <LF> received\r\n"),
            c("NOOP\r\n"),
            s(OK),
        ];
        let o = check(&auth_config(), &steps);
        assert_eq!(auth_responses(&o), vec![at_bound.into_bytes()]);
        assert_eq!(auth_starts(&o).len(), 3);
        assert!(!o.closed);
    }

    #[test]
    fn require_auth_refuses_mail_until_authenticated() {
        let cfg = ServerConfig {
            require_auth: true,
            ..auth_config()
        };
        let steps = vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            s(EHLO_AUTH_REPLY),
            c("MAIL FROM:<a@example.org>\r\n"),
            s("530 5.7.0 Authentication required\r\n"),
            c(format!("AUTH PLAIN {PLAIN_USER}\r\n")),
            s(AUTH_OK),
            c("MAIL FROM:<a@example.org>\r\n"),
            s(MAIL_OK),
        ];
        let o = check(&cfg, &steps);
        assert_eq!(o.count(|e| matches!(e, Event::CheckMail { .. })), 1);
    }

    #[test]
    fn repeated_auth_failures_reach_the_error_limit() {
        let cfg = ServerConfig {
            error_limit: 3,
            ..auth_config()
        };
        let steps = vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            s(EHLO_AUTH_REPLY),
            c("AUTH PLAIN eA==\r\nAUTH PLAIN eA==\r\nAUTH PLAIN eA==\r\nAUTH PLAIN eA==\r\n"),
            s([AUTH_BAD, AUTH_BAD, AUTH_BAD].concat()),
            s("421 4.7.0 mx.test Error: too many errors\r\n"),
        ];
        let o = check(&cfg, &steps);
        assert!(o.closed);
        assert_eq!(auth_starts(&o).len(), 3);
        assert!(
            o.events
                .contains(&Event::Closing(CloseReason::TooManyErrors))
        );
    }

    #[test]
    fn pipelined_mail_waits_for_the_auth_outcome() {
        let cfg = ServerConfig {
            require_auth: true,
            ..auth_config()
        };
        let good = vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            s(EHLO_AUTH_REPLY),
            c(format!(
                "AUTH PLAIN {PLAIN_USER}\r\nMAIL FROM:<a@example.org> AUTH=a@example.org\r\n"
            )),
            s([AUTH_OK, MAIL_OK].concat()),
        ];
        let o = check(&cfg, &good);
        let order: Vec<_> = o
            .events
            .iter()
            .filter(|e| matches!(e, Event::AuthStart { .. } | Event::CheckMail { .. }))
            .collect();
        assert!(
            matches!(order[..], [Event::AuthStart { .. }, Event::CheckMail { params, .. }]
            if params.auth.as_deref() == Some("a@example.org"))
        );
        let bad = vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            s(EHLO_AUTH_REPLY),
            c("AUTH PLAIN eA==\r\nMAIL FROM:<a@example.org>\r\n"),
            s(AUTH_BAD),
            s("530 5.7.0 Authentication required\r\n"),
        ];
        let o = check(&cfg, &bad);
        assert_eq!(o.count(|e| matches!(e, Event::CheckMail { .. })), 0);
        // Without require_auth the AUTH= of a client that failed is recorded as `<>`.
        let bad = vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            s(EHLO_AUTH_REPLY),
            c("AUTH PLAIN eA==\r\nMAIL FROM:<a@example.org> AUTH=a@example.org\r\n"),
            s([AUTH_BAD, MAIL_OK].concat()),
        ];
        let o = check(&auth_config(), &bad);
        let auth = o.events.iter().find_map(|e| match e {
            Event::CheckMail { params, .. } => Some(params.auth.clone()),
            _ => None,
        });
        assert_eq!(auth, Some(Some(String::new())));
    }

    #[test]
    fn auth_exchange_times_out_like_a_command() {
        let steps = vec![
            s(GREETING),
            c("EHLO client.example\r\n"),
            s(EHLO_AUTH_REPLY),
            c("AUTH LOGIN\r\n"),
            s("334 VXNlcm5hbWU6\r\n"),
            secs(299),
            secs(1),
            s("421 4.4.2 mx.test Error: timeout exceeded\r\n"),
        ];
        let o = check(&auth_config(), &steps);
        assert!(o.closed);
        assert!(o.events.contains(&Event::Closing(CloseReason::Timeout)));
    }

    #[test]
    fn auth_answers_out_of_order_are_ignored() {
        let now = Instant::now();
        let mut session = Session::new(Rc::new(auth_config()), now);
        session.auth_challenge(b"x", now);
        session.auth_success("user".into(), None, now);
        session.auth_failure(Reply::new(535, "5.7.8", "no"), now);
        assert_eq!(session.poll_transmit(), Some(GREETING.to_vec()));
        assert!(!session.is_authenticated());
        assert!(session.wants_input());
    }
}
