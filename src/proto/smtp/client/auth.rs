//! Logging in to the next hop (RFC 4954) with the SASL client of
//! [`crate::proto::sasl::client`], after EHLO and before any mail.

use std::time::Instant;

use super::connection::ConnectionFailure;
use super::{Client, ClientEvent, Command, Extensions, Failure, Phase, first_line};
use crate::proto::sasl::base64;
use crate::proto::sasl::client::{
    ClientAuthError, ClientMechanism, ClientStep, SaltedPassword, SaslClient,
};
use crate::proto::smtp::reply::Reply;

impl Client {
    /// EHLO (or HELO) is through: log in first where the configuration says so, then
    /// say `Ready`.
    pub(super) fn open(&mut self, ext: Extensions) {
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
        self.conn.send(Command::Auth, line);
    }

    /// A reply in the AUTH exchange.
    pub(super) fn on_auth_reply(&mut self, reply: Reply) {
        let Some(sasl) = self.sasl.as_mut() else {
            self.fail(ConnectionFailure::Unexpected);
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
                self.conn.send(Command::Auth, line);
            }
            ClientStep::Derive(d) => {
                // Nothing is owed until `derived`: no deadline, and any input is unexpected.
                self.conn.disarm();
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
        if self.phase != Phase::Opening || self.conn.owes_reply() {
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
}
