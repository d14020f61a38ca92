//! RFC 1413 ident client core: builds the query line and reads the bounded reply line.
//!
//! No I/O and no clock reads: the async layer connects to the client's port 113, sends
//! `poll_transmit()`, feeds what it reads to `handle_input`, arms `poll_timeout()`, and
//! hands the user from `poll_event()` to the filter evaluator's `Lookups::ident_user`.
//!
//! RFC 1413 §6: the answer "is at most as trustworthy as the host providing it"; `user@host`
//! filter entries narrow a host entry, they never stand in for one.

use std::time::{Duration, Instant};

use super::MAX_USER;

/// Longest reply line, CRLF excluded: 1000 octets (RFC 1413 §5, Notes on Syntax 2:
/// "Clients should feel free to abort a connection if they receive 1000 characters without
/// receiving an `<EOL>`"). The line buffer costs this much and one octet for the CR.
pub const MAX_REPLY_LINE: usize = 1000;
/// The line buffer: a longest line and its CR.
const LINE_BUFFER: usize = MAX_REPLY_LINE + 1;
/// Longest query line: `65535 , 65535\r\n`, 15 octets.
pub const MAX_QUERY_LINE: usize = 15;
/// A port in decimal: at most 5 digits (65535).
const MAX_PORT_DIGITS: usize = 5;
/// How long the whole exchange may take: 10 s, tcp_wrappers' RFC931_TIMEOUT. An ident
/// answer is a nicety; a slow one must not hold up the SMTP greeting.
pub const IDENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The query line for a connection from the client's `their_port` to our `our_port`
/// (RFC 1413: `<port-on-server> , <port-on-client>`, the ident server being the client).
pub fn query(their_port: u16, our_port: u16) -> heapless::String<MAX_QUERY_LINE> {
    let mut line = heapless::String::new();
    // Two u16s of at most five digits and eight octets of punctuation fit in 15 octets.
    use std::fmt::Write as _;
    let fits = write!(line, "{their_port} , {our_port}\r\n").is_ok();
    debug_assert!(fits);
    line
}

/// A well-formed ident reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentReply {
    /// `USERID : <os> : <user>`.
    User {
        /// The operating-system field (`UNIX`, `OTHER`), with any `,charset` part.
        os: String,
        /// The user identifier, surrounding blanks removed; 1 to `MAX_USER` octets.
        ///
        /// RFC 1413 §5 counts blanks after the colon as part of the identifier, yet its own
        /// example (`UNIX : stjohns`) pads the colon; like tcp_wrappers we drop them, so
        /// that names in filters match.
        user: String,
    },
    /// `ERROR : <code>`.
    Error(IdentErrorCode),
}

impl IdentReply {
    /// The user name the reply gives, if any: what `Lookups::ident_user` should return.
    pub fn user(&self) -> Option<&str> {
        match self {
            IdentReply::User { user, .. } => Some(user),
            IdentReply::Error(_) => None,
        }
    }
}

/// RFC 1413 error codes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentErrorCode {
    /// `INVALID-PORT`.
    InvalidPort,
    /// `NO-USER`.
    NoUser,
    /// `HIDDEN-USER`.
    HiddenUser,
    /// `UNKNOWN-ERROR`.
    UnknownError,
    /// Any other token (RFC 1413 allows `X-` extensions), as sent.
    Other(String),
}

/// Why no reply could be had: the peer's misbehaviour, or time running out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentFailure {
    /// More than `MAX_REPLY_LINE` octets without a line end.
    LineTooLong,
    /// The line is not `ports : type : info`.
    Malformed,
    /// The reply names other ports than we asked about.
    PortMismatch,
    /// A USERID reply with an empty, overlong or NUL-bearing user identifier.
    BadUser,
    /// The connection ended before a whole line came (RFC 1413 §5: the same meaning as
    /// `ERROR : UNKNOWN-ERROR`).
    Truncated,
    /// `IDENT_TIMEOUT` passed.
    TimedOut,
}

/// One ident exchange.
///
/// Calling order: `new(…, now)`; send `poll_transmit()` once it returns bytes; feed every
/// read to `handle_input`, and `handle_end_of_stream` at EOF; call `handle_timeout(now)`
/// when `poll_timeout()` passes; take the result from `poll_event()`, which yields exactly
/// one result per exchange. Input after the result is ignored.
#[derive(Debug)]
pub struct IdentExchange {
    their_port: u16,
    our_port: u16,
    query_sent: bool,
    line: heapless::Vec<u8, LINE_BUFFER>,
    deadline: Instant,
    result: Option<Result<IdentReply, IdentFailure>>,
    finished: bool,
}

impl IdentExchange {
    /// An exchange about the connection from the client's `their_port` to our `our_port`.
    pub fn new(their_port: u16, our_port: u16, now: Instant) -> IdentExchange {
        IdentExchange {
            their_port,
            our_port,
            query_sent: false,
            line: heapless::Vec::new(),
            deadline: now + IDENT_TIMEOUT,
            result: None,
            finished: false,
        }
    }

    /// The query line, once.
    pub fn poll_transmit(&mut self) -> Option<heapless::String<MAX_QUERY_LINE>> {
        if self.query_sent || self.finished {
            return None;
        }
        self.query_sent = true;
        Some(query(self.their_port, self.our_port))
    }

    /// Bytes read from the ident server.
    pub fn handle_input(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if self.finished {
                return;
            }
            if byte == b'\n' {
                let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
                let result = if line.len() > MAX_REPLY_LINE {
                    Err(IdentFailure::LineTooLong)
                } else {
                    parse_reply(line, self.their_port, self.our_port)
                };
                self.finish(result);
            } else if self.line.push(byte).is_err() {
                self.finish(Err(IdentFailure::LineTooLong));
            }
        }
    }

    /// The server closed the connection.
    pub fn handle_end_of_stream(&mut self) {
        if !self.finished {
            self.finish(Err(IdentFailure::Truncated));
        }
    }

    /// The time from `poll_timeout()` may have come.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.finished && now >= self.deadline {
            self.finish(Err(IdentFailure::TimedOut));
        }
    }

    /// When `handle_timeout` is next due, while the exchange is open.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.finished).then_some(self.deadline)
    }

    /// The result, once, when it is known.
    pub fn poll_event(&mut self) -> Option<Result<IdentReply, IdentFailure>> {
        self.result.take()
    }

    fn finish(&mut self, result: Result<IdentReply, IdentFailure>) {
        self.finished = true;
        self.line.clear();
        self.result = Some(result);
    }
}

fn is_blank(byte: &u8) -> bool {
    *byte == b' ' || *byte == b'\t'
}

fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes
        && is_blank(first)
    {
        bytes = rest;
    }
    while let [rest @ .., last] = bytes
        && is_blank(last)
    {
        bytes = rest;
    }
    bytes
}

fn text(bytes: &[u8]) -> Result<&str, IdentFailure> {
    std::str::from_utf8(trim(bytes)).map_err(|_| IdentFailure::Malformed)
}

fn port(bytes: &[u8]) -> Result<u16, IdentFailure> {
    let digits = trim(bytes);
    if digits.is_empty() || digits.len() > MAX_PORT_DIGITS || !digits.iter().all(u8::is_ascii_digit)
    {
        return Err(IdentFailure::Malformed);
    }
    text(digits)?.parse().map_err(|_| IdentFailure::Malformed)
}

/// Parses one reply line, line end removed.
fn parse_reply(line: &[u8], their_port: u16, our_port: u16) -> Result<IdentReply, IdentFailure> {
    let mut fields = line.splitn(3, |&b| b == b':');
    let (Some(ports), Some(kind), Some(info)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(IdentFailure::Malformed);
    };
    let mut pair = ports.splitn(2, |&b| b == b',');
    let (Some(first), Some(second)) = (pair.next(), pair.next()) else {
        return Err(IdentFailure::Malformed);
    };
    if (port(first)?, port(second)?) != (their_port, our_port) {
        return Err(IdentFailure::PortMismatch);
    }
    let kind = text(kind)?;
    if kind.eq_ignore_ascii_case("USERID") {
        let mut info = info.splitn(2, |&b| b == b':');
        let (Some(os), Some(user)) = (info.next(), info.next()) else {
            return Err(IdentFailure::Malformed);
        };
        let os = text(os)?;
        let user = trim(user);
        if os.is_empty() {
            return Err(IdentFailure::Malformed);
        }
        if user.is_empty() || user.len() > MAX_USER || user.contains(&0) {
            return Err(IdentFailure::BadUser);
        }
        // RFC 1413 user identifiers are octets; a non-UTF-8 one cannot match a filter
        // pattern by name, so it is kept in a lossless-enough form for KNOWN and logs.
        let user = String::from_utf8_lossy(user).into_owned();
        Ok(IdentReply::User {
            os: os.to_string(),
            user,
        })
    } else if kind.eq_ignore_ascii_case("ERROR") {
        let code = text(info)?;
        Ok(IdentReply::Error(
            match code.to_ascii_uppercase().as_str() {
                "INVALID-PORT" => IdentErrorCode::InvalidPort,
                "NO-USER" => IdentErrorCode::NoUser,
                "HIDDEN-USER" => IdentErrorCode::HiddenUser,
                "UNKNOWN-ERROR" => IdentErrorCode::UnknownError,
                "" => return Err(IdentFailure::Malformed),
                _ => IdentErrorCode::Other(code.to_string()),
            },
        ))
    } else {
        Err(IdentFailure::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::dns::rng::Prng;

    /// Feeds `chunks` to a fresh exchange about ports 6193 → 23, then EOF.
    fn feed(chunks: &[&[u8]]) -> Result<IdentReply, IdentFailure> {
        let mut exchange = IdentExchange::new(6193, 23, Instant::now());
        assert!(exchange.poll_transmit().is_some());
        for chunk in chunks {
            exchange.handle_input(chunk);
        }
        exchange.handle_end_of_stream();
        let result = exchange.poll_event().expect("a result after EOF");
        assert_eq!(exchange.poll_event(), None);
        assert_eq!(exchange.poll_timeout(), None);
        result
    }

    /// The same result whole, one byte at a time, and split at every index.
    fn feed_every_way(bytes: &[u8]) -> Result<IdentReply, IdentFailure> {
        let whole = feed(&[bytes]);
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(feed(&bytewise), whole, "{bytes:?} byte by byte");
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            assert_eq!(feed(&[a, b]), whole, "{bytes:?} split at {at}");
        }
        whole
    }

    fn user(os: &str, user: &str) -> Result<IdentReply, IdentFailure> {
        Ok(IdentReply::User {
            os: os.into(),
            user: user.into(),
        })
    }

    #[test]
    fn query_lines() {
        assert_eq!(query(6193, 23).as_str(), "6193 , 23\r\n");
        assert_eq!(query(65535, 65535).as_str(), "65535 , 65535\r\n");
        assert_eq!(query(0, 0).as_str(), "0 , 0\r\n");
        let mut exchange = IdentExchange::new(40000, 25, Instant::now());
        assert_eq!(exchange.poll_transmit().unwrap().as_str(), "40000 , 25\r\n");
        assert_eq!(exchange.poll_transmit(), None);
    }

    #[test]
    fn replies() {
        let long_user = format!("6193,23:USERID:UNIX:{}\r\n", "u".repeat(MAX_USER + 1));
        let longest_user = format!("6193,23:USERID:UNIX:{}\r\n", "u".repeat(MAX_USER));
        let padding = MAX_REPLY_LINE - "6193,23:ERROR:".len();
        let longest_line = format!("6193,23:ERROR:{}\r\n", "X".repeat(padding));
        let long_line = format!("6193,23:ERROR:{}\r\n", "X".repeat(padding + 1));
        let cases: Vec<(&[u8], Result<IdentReply, IdentFailure>)> = vec![
            // RFC 1413's own examples.
            (
                b"6193, 23 : USERID : UNIX : stjohns\r\n",
                user("UNIX", "stjohns"),
            ),
            (
                b"6193, 23 : ERROR : NO-USER\r\n",
                Ok(IdentReply::Error(IdentErrorCode::NoUser)),
            ),
            (
                b"6193,23:USERID:OTHER,US-ASCII:a b:c\n",
                user("OTHER,US-ASCII", "a b:c"),
            ),
            (b"6193 ,\t23 :userid: UNIX :\tbob \r\n", user("UNIX", "bob")),
            (
                b"6193,23:ERROR:INVALID-PORT\r\n",
                Ok(IdentReply::Error(IdentErrorCode::InvalidPort)),
            ),
            (
                b"6193,23:ERROR:hidden-user\r\n",
                Ok(IdentReply::Error(IdentErrorCode::HiddenUser)),
            ),
            (
                b"6193,23:ERROR:UNKNOWN-ERROR\r\n",
                Ok(IdentReply::Error(IdentErrorCode::UnknownError)),
            ),
            (
                b"6193,23:ERROR:X-BUSY\r\n",
                Ok(IdentReply::Error(IdentErrorCode::Other("X-BUSY".into()))),
            ),
            (longest_user.as_bytes(), user("UNIX", &"u".repeat(MAX_USER))),
            (
                longest_line.as_bytes(),
                Ok(IdentReply::Error(IdentErrorCode::Other(
                    "X".repeat(padding),
                ))),
            ),
            (
                b"6193,24:USERID:UNIX:bob\r\n",
                Err(IdentFailure::PortMismatch),
            ),
            (
                b"23,6193:USERID:UNIX:bob\r\n",
                Err(IdentFailure::PortMismatch),
            ),
            (b"6193,23:USERID:UNIX:\r\n", Err(IdentFailure::BadUser)),
            (b"6193,23:USERID:UNIX:a\0b\r\n", Err(IdentFailure::BadUser)),
            (long_user.as_bytes(), Err(IdentFailure::BadUser)),
            (long_line.as_bytes(), Err(IdentFailure::LineTooLong)),
            (b"6193,23:USERID:UNIX\r\n", Err(IdentFailure::Malformed)),
            (b"6193,23:USERID::bob\r\n", Err(IdentFailure::Malformed)),
            (b"6193,23:ERROR:\r\n", Err(IdentFailure::Malformed)),
            (b"6193,23:MAYBE:bob\r\n", Err(IdentFailure::Malformed)),
            (b"6193 23:USERID:UNIX:bob\r\n", Err(IdentFailure::Malformed)),
            (
                b"+6193,23:USERID:UNIX:bob\r\n",
                Err(IdentFailure::Malformed),
            ),
            (
                b"99999,23:USERID:UNIX:bob\r\n",
                Err(IdentFailure::Malformed),
            ),
            (b"6193,23\r\n", Err(IdentFailure::Malformed)),
            (b"\r\n", Err(IdentFailure::Malformed)),
            (b"6193,23:ERROR:\xff\r\n", Err(IdentFailure::Malformed)),
            (b"6193,23:USERID:UNIX:bob", Err(IdentFailure::Truncated)),
            (b"", Err(IdentFailure::Truncated)),
            // Only the first line counts.
            (
                b"6193,23:ERROR:NO-USER\r\ngarbage",
                Ok(IdentReply::Error(IdentErrorCode::NoUser)),
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                feed_every_way(bytes),
                expected,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert_eq!(user("UNIX", "bob").unwrap().user(), Some("bob"));
        assert_eq!(IdentReply::Error(IdentErrorCode::NoUser).user(), None);
    }

    #[test]
    fn overlong_line_fails_without_waiting_for_its_end() {
        let mut exchange = IdentExchange::new(1, 2, Instant::now());
        exchange.handle_input(&[b'x'; LINE_BUFFER + 1]);
        assert_eq!(exchange.poll_event(), Some(Err(IdentFailure::LineTooLong)));
        exchange.handle_input(b"1,2:USERID:UNIX:bob\r\n");
        exchange.handle_end_of_stream();
        assert_eq!(exchange.poll_event(), None);
    }

    #[test]
    fn timeout() {
        let start = Instant::now();
        let mut exchange = IdentExchange::new(1, 2, start);
        assert_eq!(exchange.poll_timeout(), Some(start + IDENT_TIMEOUT));
        exchange.handle_timeout(start + IDENT_TIMEOUT - Duration::from_millis(1));
        assert_eq!(exchange.poll_event(), None);
        exchange.handle_timeout(start + IDENT_TIMEOUT);
        assert_eq!(exchange.poll_event(), Some(Err(IdentFailure::TimedOut)));
        assert_eq!(exchange.poll_timeout(), None);
        assert_eq!(exchange.poll_transmit(), None);
    }

    /// Mutated replies, fed in random pieces: no panic, exactly one result, users bounded.
    #[test]
    fn fuzz_replies() {
        const CASES: usize = 20_000;
        let seeds: [&[u8]; 4] = [
            b"6193, 23 : USERID : UNIX : stjohns\r\n",
            b"6193, 23 : ERROR : NO-USER\r\n",
            b"6193,23:USERID:OTHER,US-ASCII:a b:c\n",
            b"6193,23:ERROR:X-BUSY\r\n",
        ];
        let interesting = b":,\r\n \t\0\xff0123456789";
        let mut rng = Prng::from_seed(0x1413);
        for _ in 0..CASES {
            let mut bytes = seeds[rng.below(seeds.len())].to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len() + 1);
                match rng.below(5) {
                    0 if at < bytes.len() => bytes[at] = interesting[rng.below(interesting.len())],
                    1 => bytes.insert(at, interesting[rng.below(interesting.len())]),
                    2 => bytes.truncate(at),
                    3 => {
                        let run = vec![b'a'; rng.below(2 * LINE_BUFFER)];
                        bytes.splice(at..at, run);
                    }
                    _ => {
                        if at < bytes.len() {
                            bytes.remove(at);
                        }
                    }
                }
            }
            let mut exchange = IdentExchange::new(6193, 23, Instant::now());
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let (piece, tail) = rest.split_at(1 + rng.below(rest.len()));
                exchange.handle_input(piece);
                rest = tail;
            }
            exchange.handle_end_of_stream();
            match exchange.poll_event() {
                Some(Ok(IdentReply::User { user, .. })) => {
                    assert!(!user.is_empty() && user.len() <= 3 * MAX_USER)
                }
                Some(_) => {}
                None => panic!("no result for {bytes:?}"),
            }
            assert_eq!(exchange.poll_event(), None);
        }
    }
}
