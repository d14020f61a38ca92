//! The mail transaction of the SMTP server session: MAIL, RCPT, DATA, BDAT and RSET,
//! the layer's answers to them (`answer`, `accept_rcpt`, `commit_done`), and the message
//! content path from the client's octets to `MessageData` and `MessageEnd`. Invariant:
//! every `MessageBegin` is followed by exactly one `MessageEnd` or `MessageAbort`, and
//! content is read only after HELO/EHLO, MAIL and an accepted RCPT.

use std::time::Instant;

use super::{Event, Phase, Session, Transaction, Verdict, Wait};
use crate::proto::smtp::address::{Path, PathTarget, Recipient};
use crate::proto::smtp::command::{CommandError, Param, ParamError, mail_params, rcpt_params};
use crate::proto::smtp::data::{ContentChecker, ContentError, DataReader};
use crate::proto::smtp::keywords::EhloKeywords;
use crate::proto::smtp::reply::Reply;

impl Session {
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
                // A refused recipient counts as an error: one connection must not try
                // address after address (a directory harvest, each a callout). A
                // temporary refusal is not the client's fault and does not count.
                Verdict::Reject(r) => {
                    let counts = r.is_permanent();
                    self.reject_rcpt("RCPT", &to, r, counts)
                }
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

    pub(super) fn mail(&mut self, verb: &str, path: Path, params: &[Param]) {
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

    pub(super) fn rcpt(&mut self, verb: &str, path: Path, params: &[Param]) {
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

    /// DATA: refused without MAIL and an accepted recipient, or while a BDAT message is
    /// under way; else `354` and the content is read.
    pub(super) fn data(&mut self, verb: &str) {
        if let Some(refusal) = self.refuse_content() {
            return self.reject(verb, refusal, true);
        }
        if self.bdat.is_some() {
            let r = Reply::new(503, "5.5.1", "Error: BDAT transfer in progress");
            return self.reject(verb, r, true);
        }
        self.event(Event::MessageBegin);
        self.reply(&Reply::plain(
            354,
            vec!["End data with <CR><LF>.<CR><LF>".into()],
        ));
        let reader = DataReader::new(self.config.max_line_length, self.config.max_message_size);
        self.phase = Phase::Data(reader);
        self.start_content();
    }

    /// BDAT (RFC 3030): the chunk is always consumed; the first accepted chunk begins the
    /// message.
    pub(super) fn bdat(&mut self, size: u64, last: bool) {
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

    /// RSET: the transaction is forgotten; the session (HELO/EHLO, AUTH, TLS) stays.
    pub(super) fn rset(&mut self) {
        self.reset_transaction();
        self.reply(&Reply::new(250, "2.0.0", "Ok"));
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

    /// Consumes a BDAT chunk and answers it with `refusal`.
    pub(super) fn refuse_chunk(&mut self, size: u64, last: bool, refusal: Reply) {
        self.read_chunk(size, last, Some(refusal));
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

    /// Message content begins now (the time of the input or answer being processed).
    fn start_content(&mut self) {
        self.data_started = self.last_input;
        self.data_octets = 0;
    }

    /// Consumes a prefix of `buf` as message content (DATA, or the current BDAT chunk),
    /// ending the content or the chunk when its end is in `buf`. Outside content: 0.
    pub(super) fn content(&mut self, buf: &[u8]) -> usize {
        match &mut self.phase {
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
            _ => 0,
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
                self.event(Event::MessageEnd(Box::new(transaction)));
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
    pub(super) fn reset_transaction(&mut self) {
        if self.bdat.take().is_some() {
            self.event(Event::MessageAbort);
        }
        self.mail = None;
        self.rcpts.clear();
        self.rcpt_seen = false;
    }
}

/// RFC 6531 §3.5: a non-ASCII address needs SMTPUTF8 on MAIL.
fn non_ascii_reply() -> Reply {
    Reply::new(553, "5.6.7", "Error: non-ASCII address requires SMTPUTF8")
}
