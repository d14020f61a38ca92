//! The AUTH exchange (RFC 4954) of the SMTP server session: which mechanisms are offered
//! now, the checks on AUTH, the 334 challenges and response lines, and the layer's
//! answers (`auth_challenge`, `auth_success`, `auth_failure`). The session runs no SASL
//! mechanism itself. Invariant: a response line is at most `MAX_AUTH_LINE` octets plus
//! CRLF, and the session is authenticated only after the layer's `auth_success` (and,
//! with final data, the client's empty line).

use std::time::Instant;

use super::{Event, MAX_AUTH_LINE, Phase, Session, Wait};
use crate::proto::smtp::command::LineError;
use crate::proto::smtp::keywords::EhloKeywords;
use crate::proto::smtp::reply::Reply;

impl Session {
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

    /// Frames one line of an AUTH exchange and handles it.
    pub(super) fn auth_line(&mut self, buf: &[u8]) -> usize {
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

    /// RFC 4954 §4: AUTH is checked against the session state and the mechanisms offered,
    /// then handed to the layer.
    pub(super) fn auth(&mut self, verb: &str, mechanism: String, initial: Option<Vec<u8>>) {
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

    /// Whether `mechanism` waits for TLS: every one does where TLS is required (RFC 3207
    /// §4: nothing but NOOP, EHLO, STARTTLS and QUIT before it; a login in clear would
    /// be forgotten at STARTTLS anyway, and would only give an eavesdropper an exchange
    /// to attack).
    fn needs_tls(&self, mechanism: &str) -> bool {
        self.config.require_tls
            || self
                .config
                .auth_needs_tls
                .iter()
                .any(|m| m.eq_ignore_ascii_case(mechanism))
    }

    /// The mechanisms usable now, upper-cased, in configured order: those needing TLS
    /// only under TLS, EXTERNAL only with a verified client certificate.
    pub(super) fn auth_offered(&self) -> Vec<String> {
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

    /// Sends `334 <base64 of data>` in one line. The data comes from our own mechanisms
    /// (at most a SCRAM server-first message), never from the peer, so the line is not cut.
    fn send_sasl_data(&mut self, data: &[u8]) {
        self.out.extend_from_slice(b"334 ");
        self.out
            .extend_from_slice(crate::proto::sasl::base64::encode(data).as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn authenticated(&mut self, user: String) {
        self.auth_user = Some(user);
        self.reply(&Reply::new(235, "2.7.0", "Authentication successful"));
    }
}
