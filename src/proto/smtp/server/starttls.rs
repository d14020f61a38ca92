//! STARTTLS (RFC 3207) in the SMTP server session: the checks on the command, the
//! layer's answers (`start_tls`, `tls_unavailable`) and the handshake's outcome
//! (`tls_established`, `tls_failed`), and what a new TLS session resets. Invariant:
//! nothing the client sent after the STARTTLS line, nor before the handshake ended, is
//! ever processed (CVE-2011-0411), and after the handshake everything learnt from the
//! client is forgotten (RFC 3207 §4.2).

use std::rc::Rc;
use std::time::Instant;

use super::{CloseReason, Event, ServerConfig, Session, TlsInfo, Wait};
use crate::proto::smtp::keywords::EhloKeywords;
use crate::proto::smtp::reply::Reply;

impl Session {
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
        self.offered = super::offered_by(&self.config, true);
        self.tls = Some(info);
        self.last_input = now;
    }

    /// The settings of the channel the session is on after TLS (`tlsswitchchannel`):
    /// what EHLO offers (never STARTTLS again) and requires from now on. Called after
    /// `tls_established`, before the client's new EHLO, so nothing offered before is
    /// relied on.
    pub fn switch_channel(&mut self, config: Rc<ServerConfig>) {
        self.offered = super::offered_by(&config, self.tls.is_some());
        self.config = config;
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

    /// Whether TLS is active: after `tls_established`, or from the start with `new_tls`.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The TLS state, once TLS is active.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    pub(super) fn starttls(&mut self, verb: &str) {
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
}
