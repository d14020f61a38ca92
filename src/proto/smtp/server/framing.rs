//! Framing of the SMTP server session: input is buffered and cut into command lines
//! (RFC 5321 §2.3.8: CRLF only; at most `MAX_COMMAND_LINE` octets, `MAX_EXTENDED_COMMAND_LINE`
//! for MAIL and RCPT, an over-long line dropped up to its LF and refused), pipelined commands run in order until the session
//! must wait for the layer (RFC 2920), and the timeouts and deadlines for silence, slow
//! lines and slow content. Invariant: input is processed only while no answer from the
//! layer is pending, and what waits meanwhile is at most `MAX_PENDING_INPUT` octets.

use std::time::{Duration, Instant};

use super::{CloseReason, MAX_PENDING_INPUT, Phase, Session};
use crate::proto::smtp::command::{
    LineError, MAX_COMMAND_LINE, MAX_EXTENDED_COMMAND_LINE, verb_of,
};
use crate::proto::smtp::reply::Reply;

impl Session {
    /// Drops unprocessed input and any line being discarded.
    pub(super) fn forget_input(&mut self) {
        self.input = Vec::new();
        self.discarding = None;
        self.overrun = false;
    }

    pub(super) fn session_deadline(&self) -> Option<Instant> {
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
    pub(super) fn phase_deadline(&self) -> Option<Instant> {
        match self.phase_deadlines() {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The phase's deadlines: for silence (reset by every octet), and for the whole
    /// command line or message content (which octets do not extend, but for the content's
    /// minimum rate).
    pub(super) fn phase_deadlines(&self) -> (Option<Instant>, Option<Instant>) {
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
    pub(super) fn note_line(&mut self, now: Instant) {
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

    pub(super) fn time_out(&mut self, reason: CloseReason) {
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
    pub(super) fn resume(&mut self, now: Instant) {
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
    /// waits for the layer, or it closes; shutting down, an idle session then leaves.
    pub(super) fn process(&mut self) {
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
        self.leave_if_idle();
    }

    /// Consumes a prefix of `buf`; 0 when a complete unit needs more bytes.
    fn step(&mut self, buf: &[u8]) -> usize {
        match &mut self.phase {
            Phase::Greeting { .. } | Phase::Closed => buf.len(),
            Phase::Command => self.command_line(buf),
            Phase::AuthResponse | Phase::AuthFinal { .. } => self.auth_line(buf),
            Phase::Data(_) | Phase::Bdat { .. } => self.content(buf),
        }
    }

    /// Frames one command line (RFC 5321 §2.3.8: CRLF only) and handles it.
    fn command_line(&mut self, buf: &[u8]) -> usize {
        let (used, framed) = self.frame(buf, MAX_EXTENDED_COMMAND_LINE);
        match framed {
            None => {}
            // Only MAIL and RCPT take the extensions' longer lines.
            Some(Ok(line))
                if line.len() + b"\r\n".len() > MAX_COMMAND_LINE
                    && !matches!(verb_of(line).as_str(), "MAIL" | "RCPT") =>
            {
                let verb = verb_of(line);
                self.reject(&verb, LineError::TooLong.reply(), true)
            }
            // Shutting down, the command after a transaction gets the 421 (QUIT its 221).
            Some(Ok(line))
                if self.shutting_down.is_some()
                    && !self.in_transaction()
                    && verb_of(line) != "QUIT" =>
            {
                self.leave(false)
            }
            Some(Ok(line)) => self.command(line),
            Some(Err((verb, e))) => self.reject(&verb, e.reply(), true),
        }
        used
    }

    /// Frames one line of at most `limit` octets with its CRLF: `(0, None)` when it needs
    /// more bytes, `(n, None)` when `n` octets of an over-long line were dropped, else the
    /// line without CRLF, or what is wrong with it with the verb for logs.
    #[allow(clippy::type_complexity)]
    pub(super) fn frame<'a>(
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
}
