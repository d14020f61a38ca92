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
mod tests;
