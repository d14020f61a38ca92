//! The delivery transaction: MAIL, RCPT and DATA for one message (RFC 5321 §3.3, with
//! the parameters of RFC 1870, 6152, 6531 and 3461), pipelined where the server allows
//! (RFC 2920), the content handed over in pieces and each recipient's outcome.

use std::fmt::Write as _;
use std::time::Instant;

use super::connection::ConnectionFailure;
use super::{Client, ClientEvent, Command, Extensions, Failure, Stuffer};
use crate::proto::smtp::reply::Reply;

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

/// Where a recipient of the transaction in flight stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum RcptState {
    /// RCPT not answered yet.
    Pending,
    /// RCPT answered positively; the outcome of DATA decides.
    Accepted,
    Done(Reply),
}

/// The transaction in flight: the message and where each recipient stands.
#[derive(Debug)]
pub(super) struct Transaction {
    pub(super) msg: OutgoingMessage,
    pub(super) rcpts: Vec<RcptState>,
    pub(super) mail_failed: bool,
}

impl Transaction {
    pub(super) fn accepted(&self) -> usize {
        self.rcpts
            .iter()
            .filter(|r| **r == RcptState::Accepted)
            .count()
    }

    /// Gives `reply` to every recipient not settled yet.
    pub(super) fn settle_unsettled(&mut self, reply: &Reply) {
        for r in &mut self.rcpts {
            if !matches!(r, RcptState::Done(_)) {
                *r = RcptState::Done(reply.clone());
            }
        }
    }

    /// Gives `reply` to every recipient whose RCPT was accepted.
    pub(super) fn settle_accepted(&mut self, reply: &Reply) {
        for r in &mut self.rcpts {
            if *r == RcptState::Accepted {
                *r = RcptState::Done(reply.clone());
            }
        }
    }

    /// One reply per recipient; those left unsettled get `unsettled`.
    pub(super) fn into_replies(self, unsettled: &Reply) -> Vec<Reply> {
        self.rcpts
            .into_iter()
            .map(|r| match r {
                RcptState::Done(reply) => reply,
                RcptState::Pending | RcptState::Accepted => unsettled.clone(),
            })
            .collect()
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

impl Client {
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
            let replies = txn.into_replies(&ConnectionFailure::Unexpected.reply());
            self.events.push_back(ClientEvent::TransactionDone(replies));
            return;
        }

        let mut commands = Vec::new();
        if self.needs_rset {
            commands.push((Command::Rset, b"RSET\r\n".to_vec()));
        }
        commands.push((Command::Mail, mail_command(&txn.msg, &ext).into_bytes()));
        for (i, (rcpt, state)) in txn.msg.rcpts.iter().zip(&txn.rcpts).enumerate() {
            if *state == RcptState::Pending {
                commands.push((Command::Rcpt(i), rcpt_command(rcpt, &ext).into_bytes()));
            }
        }
        // RFC 2920 §3.1: DATA ends the group.
        commands.push((Command::Data, b"DATA\r\n".to_vec()));
        self.needs_rset = true;
        self.transaction = Some(txn);
        self.conn.send_group(commands, ext.pipelining);
        self.arm(now);
    }

    /// True while the client takes message content: after `ClientEvent::SendContent`,
    /// until `end_content`, and only once everything given before has been taken with
    /// `poll_transmit()`.
    pub fn wants_content(&self) -> bool {
        self.data.is_some() && self.conn.is_written() && !self.is_closed()
    }

    /// The next piece of message content, CRLF lines as queued, not dot-stuffed; at most
    /// [`CONTENT_CHUNK`](super::CONTENT_CHUNK) octets for the memory bound to hold.
    /// Ignored unless content is being sent.
    pub fn handle_content(&mut self, piece: &[u8], _now: Instant) {
        let Some(stuffer) = self.data.as_mut() else {
            return;
        };
        let out = stuffer.stuff(piece);
        if !out.is_empty() {
            self.conn.write(out);
        }
        self.data_progress = true;
    }

    /// The content is complete: the end of data goes out and the final reply is awaited.
    pub fn end_content(&mut self, now: Instant) {
        let Some(mut stuffer) = self.data.take() else {
            return;
        };
        self.conn.write(stuffer.finish());
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

    pub(super) fn on_mail_reply(&mut self, reply: Reply) {
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
        self.conn.clear_held();
    }

    pub(super) fn on_rcpt_reply(&mut self, i: usize, reply: Reply) {
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
        let rcpts_answered = !self.conn.is_pending(|c| matches!(c, Command::Rcpt(_)));
        if rcpts_answered && txn.accepted() == 0 {
            // No recipient: DATA is not sent (without PIPELINING).
            self.conn.clear_held();
        }
    }

    pub(super) fn on_data_reply(&mut self, reply: Reply) {
        let Some(txn) = &mut self.transaction else {
            return;
        };
        let accepted = if txn.mail_failed { 0 } else { txn.accepted() };
        if reply.code == 354 {
            if accepted > 0 {
                self.data = Some(Stuffer::new());
                self.conn.expect_reply(Command::EndOfData);
                self.events.push_back(ClientEvent::SendContent);
            } else {
                // RFC 2920 §3.1: no recipient was accepted, yet the server wants data;
                // end it at once with an empty message.
                self.conn.send(Command::AbandonedData, b".\r\n".to_vec());
            }
        } else if !txn.mail_failed {
            txn.settle_accepted(&reply);
        }
    }

    /// The reply after the content; false when it ends the connection.
    pub(super) fn on_end_of_data_reply(&mut self, reply: Reply) -> bool {
        if self.data.is_some() {
            // The server answered before the content was all handed out.
            if reply.is_positive() {
                self.fail(ConnectionFailure::Unexpected);
            } else {
                self.data = None;
                if let Some(txn) = &mut self.transaction {
                    txn.settle_accepted(&reply);
                }
                self.settle_and_close(&reply.clone(), Some(reply), false);
            }
            return false;
        }
        if let Some(txn) = &mut self.transaction {
            txn.settle_accepted(&reply);
        }
        self.needs_rset = false;
        true
    }

    /// Emits `TransactionDone` once every reply of the transaction is in.
    pub(super) fn finish_transaction(&mut self) {
        if self.conn.is_busy() || self.data.is_some() {
            return;
        }
        if let Some(txn) = self.transaction.take() {
            let unsettled = Reply::new(451, "4.5.0", "Protocol error: no reply for recipient");
            self.events
                .push_back(ClientEvent::TransactionDone(txn.into_replies(&unsettled)));
        }
    }
}
