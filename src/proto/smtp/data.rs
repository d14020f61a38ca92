//! Message content readers: DATA (dot-stuffed, ended by `<CRLF>.<CRLF>`) and the checks
//! every content byte passes, whether it came by DATA or BDAT.
//!
//! Both are byte-at-a-time state machines: input may be split anywhere and the result
//! is the same. Neither buffers content: each accepted byte is appended to the caller's
//! output at once, so the only memory is a few bytes of state.

use crate::proto::smtp::reply::Reply;

/// Most `Received:` header fields a message may carry before it is taken for a loop
/// (SPEC §2, "over 50"; RFC 5321 §6.3 leaves the number to the site).
pub const MAX_RECEIVED: u32 = 50;

/// The header field name counted for loop detection, with its colon.
const RECEIVED: &[u8; 9] = b"received:";

/// Why content is refused. The message is never committed; the reply goes out when the
/// content ends (DATA) or when the chunk ends (BDAT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentError {
    /// A CR not followed by LF (SMTP smuggling, CVE-2023-51764).
    BareCr,
    /// An LF not preceded by CR.
    BareLf,
    Nul,
    /// A line longer than this many octets with its CRLF.
    LineTooLong(u32),
    /// More octets than the fixed message size limit.
    TooBig,
    /// More than `MAX_RECEIVED` Received header fields.
    TooManyHops,
}

impl ContentError {
    pub fn reply(self) -> Reply {
        match self {
            ContentError::BareCr | ContentError::BareLf => {
                Reply::new(550, "5.5.2", "Message refused: bare <CR> or <LF> in data")
            }
            ContentError::Nul => Reply::new(550, "5.6.0", "Message refused: NUL in data"),
            ContentError::LineTooLong(n) => Reply::new(
                550,
                "5.6.0",
                format!("Message refused: line longer than {n} octets"),
            ),
            ContentError::TooBig => Reply::new(552, "5.3.4", "Message size exceeds fixed limit"),
            ContentError::TooManyHops => {
                Reply::new(554, "5.4.6", "Too many hops: mail loop detected")
            }
        }
    }

    /// A protocol error by the client (counts towards the error limit), rather than a
    /// message that is merely too big or looping.
    pub fn is_protocol_error(self) -> bool {
        matches!(
            self,
            ContentError::BareCr
                | ContentError::BareLf
                | ContentError::Nul
                | ContentError::LineTooLong(_)
        )
    }
}

/// Checks content octets (after dot-unstuffing) and passes the good ones on.
///
/// Lines must end in CRLF, with no other CR or LF; no NUL; each line at most
/// `max_line` octets with its CRLF; at most `max_size` octets in all; at most
/// `MAX_RECEIVED` Received fields in the header section. After the first error nothing
/// more is passed on.
#[derive(Clone, Debug)]
pub struct ContentChecker {
    max_line: u32,
    max_size: u64,
    size: u64,
    line_len: u32,
    pending_cr: bool,
    in_header: bool,
    /// The first octets of the current header line, to spot `Received:`.
    line_head: heapless::Vec<u8, 9>,
    received: u32,
    error: Option<ContentError>,
}

impl ContentChecker {
    pub fn new(max_line: u32, max_size: u64) -> ContentChecker {
        ContentChecker {
            max_line,
            max_size,
            size: 0,
            line_len: 0,
            pending_cr: false,
            in_header: true,
            line_head: heapless::Vec::new(),
            received: 0,
            error: None,
        }
    }

    /// Octets accepted so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn error(&self) -> Option<ContentError> {
        self.error
    }

    /// Checks `bytes` and appends them to `out` while no error has been seen.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<u8>) {
        while let Some((&b, rest)) = bytes.split_first() {
            if self.error.is_some() {
                return;
            }
            let run = if self.in_header || self.pending_cr {
                0
            } else {
                ordinary_run(bytes)
            };
            if let Some((taken, rest)) = bytes.split_at_checked(run).filter(|_| run > 0)
                && self.take_run(taken, out)
            {
                bytes = rest;
                continue;
            }
            self.push_octet(b, out);
            bytes = rest;
        }
    }

    /// [`push`](Self::push) for one octet.
    pub fn push_octet(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.error.is_some() {
            return;
        }
        match self.check(b) {
            Ok(()) => out.push(b),
            Err(e) => self.error = Some(e),
        }
    }

    /// [`push`](Self::push) for a run [`ordinary_run`] has just measured (no NUL, CR or
    /// LF in it): taken whole without a second look where it can be.
    pub fn push_run(&mut self, run: &[u8], out: &mut Vec<u8>) {
        if !self.take_run(run, out) {
            self.push(run, out);
        }
    }

    /// In the body, a run of octets that are neither NUL, CR nor LF changes only the
    /// size and the line length: when both stay within bounds it is taken whole. False
    /// when it must go octet by octet (an error seen, the header, a CR pending, a bound).
    fn take_run(&mut self, run: &[u8], out: &mut Vec<u8>) -> bool {
        let len = run.len() as u64;
        let whole = self.error.is_none()
            && !self.in_header
            && !self.pending_cr
            && self.size + len <= self.max_size
            && u64::from(self.line_len) + len <= u64::from(self.max_line);
        if whole {
            self.size += len;
            // Bounded by max_line, a u32, just above.
            self.line_len += len as u32;
            out.extend_from_slice(run);
        }
        whole
    }

    fn check(&mut self, b: u8) -> Result<(), ContentError> {
        if self.size >= self.max_size {
            return Err(ContentError::TooBig);
        }
        self.size += 1;
        if b == 0 {
            return Err(ContentError::Nul);
        }
        if self.pending_cr && b != b'\n' {
            return Err(ContentError::BareCr);
        }
        if b == b'\n' && !self.pending_cr {
            return Err(ContentError::BareLf);
        }
        self.pending_cr = b == b'\r';
        self.line_len = self.line_len.saturating_add(1);
        if self.line_len > self.max_line {
            return Err(ContentError::LineTooLong(self.max_line));
        }
        if b == b'\n' {
            if self.line_len == 2 {
                self.in_header = false;
            }
            self.line_len = 0;
            self.line_head.clear();
        } else if self.in_header && !self.line_head.is_full() {
            // Room was checked just above, so the push cannot fail.
            let _ = self.line_head.push(b.to_ascii_lowercase());
            if self.line_head.as_slice() == RECEIVED {
                self.received += 1;
                if self.received > MAX_RECEIVED {
                    return Err(ContentError::TooManyHops);
                }
            }
        }
        Ok(())
    }

    /// Ends the content: the total size, or the first error (a final lone CR is bare).
    pub fn finish(&mut self) -> Result<u64, ContentError> {
        if self.error.is_none() && self.pending_cr {
            self.error = Some(ContentError::BareCr);
        }
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.size),
        }
    }
}

/// How many octets `bytes` starts with that are neither NUL, CR nor LF: the octets a
/// line of content can be copied over in one piece. Eight octets at a time (a word has a
/// zero byte when `(w - 0x01…) & !w & 0x80…` is not zero).
pub fn ordinary_run(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const CRS: u64 = u64::from_ne_bytes([b'\r'; 8]);
    const LFS: u64 = u64::from_ne_bytes([b'\n'; 8]);
    // The high bit of each zero octet's place is set, and maybe of some octets above a
    // zero one, never below: the lowest set bit marks the first zero octet exactly.
    let zeros = |w: u64| w.wrapping_sub(ONES) & !w & HIGHS;
    let mut run = 0;
    for word in bytes.chunks_exact(8) {
        // chunks_exact gives eight octets; a zero word would only stop the run early.
        let w = <[u8; 8]>::try_from(word).map_or(0, u64::from_le_bytes);
        let special = zeros(w) | zeros(w ^ CRS) | zeros(w ^ LFS);
        if special != 0 {
            // Little-endian: octet k of the word is bits 8k to 8k+7.
            return run + (special.trailing_zeros() / 8) as usize;
        }
        run += 8;
    }
    run + bytes
        .get(run..)
        .unwrap_or_default()
        .iter()
        .take_while(|&&b| b != 0 && b != b'\r' && b != b'\n')
        .count()
}

/// Where the DATA reader stands in the current line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DotState {
    /// At the start of a line (after CRLF, or at the start of the data).
    LineStart,
    /// Read `.` at the start of a line.
    Dot,
    /// Read `.` CR at the start of a line.
    DotCr,
    /// Inside a line; `after_cr` when the last octet was CR.
    Mid { after_cr: bool },
}

/// Reads DATA content: undoes dot-stuffing (RFC 5321 §4.5.2) and stops at
/// `<CRLF>.<CRLF>`, and nothing else (`<LF>.<LF>` and the like are content, and bare).
#[derive(Clone, Debug)]
pub struct DataReader {
    state: DotState,
    checker: ContentChecker,
}

impl DataReader {
    pub fn new(max_line: u32, max_size: u64) -> DataReader {
        DataReader {
            state: DotState::LineStart,
            checker: ContentChecker::new(max_line, max_size),
        }
    }

    /// Reads `input`, appending content to `out`. Returns `Some(n)` when the end of data
    /// was read, `n` being the octets used (the rest belongs to the next command);
    /// `None` when all of `input` was used and more is needed.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        // Content is never longer than the input it came in (unstuffing only removes), so
        // `out` grows once here instead of doubling its way up octet by octet.
        out.reserve(input.len());
        let mut i = 0;
        while let Some(&b) = input.get(i) {
            // A line that does not start with a dot is inside the line from its first
            // octet (which is then read as any octet inside a line is).
            if self.state == DotState::LineStart && b != b'.' {
                self.state = DotState::Mid { after_cr: false };
            }
            // Inside a line, nothing but CR and LF moves the state: a run of other octets
            // goes to the checker whole.
            if self.state == (DotState::Mid { after_cr: false }) {
                let run = input.get(i..).map_or(0, ordinary_run);
                if let Some(piece) = input.get(i..i + run).filter(|p| !p.is_empty()) {
                    self.checker.push_run(piece, out);
                    i += run;
                    continue;
                }
            }
            i += 1;
            self.state = match (self.state, b) {
                (DotState::LineStart, b'.') => DotState::Dot,
                (DotState::Dot, b'\r') => DotState::DotCr,
                (DotState::DotCr, b'\n') => {
                    self.state = DotState::LineStart;
                    return Some(i);
                }
                (DotState::DotCr, _) => {
                    // `.` CR then something else: the dot was stuffing, the CR is bare.
                    self.checker.push(b"\r", out);
                    self.content(b, false, out)
                }
                (DotState::Mid { after_cr }, _) => self.content(b, after_cr, out),
                // The first octet of a line, or the octet after a stuffing dot.
                (DotState::LineStart | DotState::Dot, _) => self.content(b, false, out),
            };
        }
        None
    }

    fn content(&mut self, b: u8, after_cr: bool, out: &mut Vec<u8>) -> DotState {
        self.checker.push_octet(b, out);
        match b {
            b'\n' if after_cr => DotState::LineStart,
            b'\r' => DotState::Mid { after_cr: true },
            _ => DotState::Mid { after_cr: false },
        }
    }

    /// After `feed` returned `Some`: the content size, or why it is refused.
    pub fn finish(&mut self) -> Result<u64, ContentError> {
        self.checker.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` whole, byte by byte and split at every index; all must agree.
    fn read(
        input: &[u8],
        max_line: u32,
        max_size: u64,
    ) -> (Option<usize>, Vec<u8>, Result<u64, ContentError>) {
        let run = |chunks: &[&[u8]]| {
            let mut r = DataReader::new(max_line, max_size);
            let mut out = Vec::new();
            let mut used = 0;
            for chunk in chunks {
                if let Some(n) = r.feed(chunk, &mut out) {
                    return (Some(used + n), out, r.finish());
                }
                used += chunk.len();
            }
            (
                None,
                out,
                r.checker.error().map_or(Ok(r.checker.size()), Err),
            )
        };
        let whole = run(&[input]);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&bytes), whole, "byte at a time");
        for i in 0..=input.len() {
            assert_eq!(run(&[&input[..i], &input[i..]]), whole, "split at {i}");
        }
        whole
    }

    #[test]
    fn dot_stuffing_and_end() {
        let (end, out, res) = read(b"a\r\n..b\r\n.c\r\n.\r\nNEXT", 1000, 1000);
        assert_eq!(end, Some(15));
        assert_eq!(out, b"a\r\n.b\r\nc\r\n");
        assert_eq!(res, Ok(10));
        let (end, out, res) = read(b".\r\n", 1000, 1000);
        assert_eq!((end, out, res), (Some(3), Vec::new(), Ok(0)));
    }

    #[test]
    fn only_crlf_dot_crlf_ends() {
        for input in [
            &b"a\n.\nb"[..],
            b"a\r.\rb",
            b"a\n.\r\nb",
            b"a\r\n.\nb",
            b"a\r\n.\rb",
        ] {
            let (end, _, res) = read(input, 1000, 1000);
            assert_eq!(end, None, "{input:?}");
            assert!(
                matches!(res, Err(ContentError::BareCr | ContentError::BareLf)),
                "{input:?}"
            );
        }
        let (end, _, res) = read(b"a\n.\nb\r\n.\r\n", 1000, 1000);
        assert_eq!(end, Some(10));
        assert_eq!(res, Err(ContentError::BareLf));
        let (end, _, res) = read(b"a\r.\r\n.\r\n", 1000, 1000);
        assert_eq!(end, Some(8));
        assert_eq!(res, Err(ContentError::BareCr));
    }

    #[test]
    fn nul_line_length_and_size() {
        assert_eq!(read(b"a\0b\r\n.\r\n", 1000, 1000).2, Err(ContentError::Nul));
        // A line of exactly 6 octets with CRLF passes; 7 does not.
        assert_eq!(read(b"abcd\r\n.\r\n", 6, 1000).2, Ok(6));
        assert_eq!(
            read(b"abcde\r\n.\r\n", 6, 1000).2,
            Err(ContentError::LineTooLong(6))
        );
        assert_eq!(read(b"abcd\r\n.\r\n", 1000, 6).2, Ok(6));
        let (end, out, res) = read(b"abcd\r\nx\r\n.\r\n", 1000, 6);
        assert_eq!(end, Some(12));
        assert_eq!(out, b"abcd\r\n");
        assert_eq!(res, Err(ContentError::TooBig));
    }

    #[test]
    fn body_runs_are_held_to_the_same_limits() {
        // Long body lines go through the run fast path when read whole and octet by octet
        // when read byte at a time; `read` checks that both agree.
        let msg = |line: usize, lines: usize| {
            let mut m = b"Subject: s\r\n\r\n".to_vec();
            for i in 0..lines {
                m.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, line));
                m.extend_from_slice(b"\r\n");
            }
            m.extend_from_slice(b".\r\n");
            m
        };
        assert_eq!(read(&msg(38, 3), 40, 1000).2, Ok(14 + 3 * 40));
        assert_eq!(
            read(&msg(39, 3), 40, 1000).2,
            Err(ContentError::LineTooLong(40))
        );
        assert_eq!(read(&msg(38, 3), 40, 14 + 3 * 40).2, Ok(14 + 3 * 40));
        let (_, out, res) = read(&msg(38, 3), 40, 14 + 3 * 40 - 1);
        assert_eq!(res, Err(ContentError::TooBig));
        assert_eq!(out.len(), 14 + 3 * 40 - 1);
        let mut odd = msg(30, 2);
        odd[20] = 0;
        assert_eq!(read(&odd, 1000, 1000).2, Err(ContentError::Nul));
        let mut bare = msg(30, 2);
        bare[25] = b'\r';
        assert_eq!(read(&bare, 1000, 1000).2, Err(ContentError::BareCr));
    }

    #[test]
    fn ordinary_runs_stop_at_nul_cr_and_lf() {
        assert_eq!(ordinary_run(b""), 0);
        assert_eq!(ordinary_run(b"abc"), 3);
        for special in [0u8, b'\r', b'\n'] {
            for at in 0..40 {
                let mut bytes = vec![b'x'; 40];
                bytes[at] = special;
                assert_eq!(ordinary_run(&bytes), at, "{special} at {at}");
            }
        }
        // Octets near the special ones are ordinary.
        assert_eq!(
            ordinary_run(&[1, 9, 11, 12, 14, 0x8d, 0x8a, 0xff, 0x80, 2]),
            10
        );
        // The first special octet of a word counts, whatever follows it (an octet of 1
        // above a zero one is where the word test alone would also fire).
        assert_eq!(ordinary_run(&[0x81, 0x80, 0xff, b'\r', 0, b'\n', 1, 1]), 3);
        assert_eq!(ordinary_run(&[b'a', 0, 1, 1, 1, 1, 1, 1, 1]), 1);
        assert_eq!(
            ordinary_run(
                &[b'a'; 16]
                    .iter()
                    .chain(b"\n\r\0")
                    .copied()
                    .collect::<Vec<u8>>()
            ),
            16
        );
    }

    #[test]
    fn received_fields_counted_in_header_only() {
        let msg = |n: usize, tail: &str| {
            let mut m = "Received: from x\r\n\tcontinued\r\n".repeat(n);
            m.push_str("Subject: s\r\n\r\n");
            m.push_str(tail);
            m.push_str(".\r\n");
            m.into_bytes()
        };
        assert!(read(&msg(50, ""), 1000, 100_000).2.is_ok());
        assert_eq!(
            read(&msg(51, ""), 1000, 100_000).2,
            Err(ContentError::TooManyHops)
        );
        let body = "RECEIVED: in the body\r\n".repeat(10);
        assert!(read(&msg(50, &body), 1000, 100_000).2.is_ok());
        let mixed = b"received: a\r\nReceived:b\r\n\r\n.\r\n";
        let mut c = ContentChecker::new(1000, 1000);
        c.push(&mixed[..mixed.len() - 3], &mut Vec::new());
        assert_eq!(c.received, 2);
    }

    #[test]
    fn checker_across_chunks() {
        let mut c = ContentChecker::new(1000, 1000);
        let mut out = Vec::new();
        c.push(b"a\r", &mut out);
        c.push(b"\nb", &mut out);
        assert_eq!(c.finish(), Ok(4));
        assert_eq!(out, b"a\r\nb");
        let mut c = ContentChecker::new(1000, 1000);
        c.push(b"a\r", &mut Vec::new());
        assert_eq!(c.finish(), Err(ContentError::BareCr));
        assert_eq!(
            ContentError::LineTooLong(1000).reply().to_wire(),
            b"550 5.6.0 Message refused: line longer than 1000 octets\r\n"
        );
    }
}
