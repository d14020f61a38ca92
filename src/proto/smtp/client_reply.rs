//! Reads SMTP replies from a server's byte stream, however the bytes are split.
//!
//! The raw form (a reply line as read) stays inside this module; out comes a checked
//! [`Reply`] whose code is valid and whose lines all carry that same code.

use crate::proto::smtp::reply::{Enhanced, MAX_REPLY_LINE, MAX_REPLY_LINES, Reply};

/// Most octets buffered for one unfinished line: the 510 octets of text a line may hold
/// (RFC 5321 §4.5.3.1.5: 512 octets with CRLF) plus its CR. Costs 511 octets.
const MAX_LINE_BUFFER: usize = MAX_REPLY_LINE - 1;

/// Longest line text without its line ending (RFC 5321 §4.5.3.1.5: 512 octets with CRLF).
const MAX_LINE_TEXT: usize = MAX_REPLY_LINE - 2;

/// Why the server's bytes are not a reply. The connection cannot go on after any of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// A line does not start with a reply code and a space or hyphen (RFC 5321 §4.2).
    BadCode,
    /// A line passes 512 octets (RFC 5321 §4.5.3.1.5).
    LineTooLong,
    /// A multi-line reply passes [`MAX_REPLY_LINES`] lines.
    TooManyLines,
    /// A line of a multi-line reply carries another code than the first (RFC 5321 §4.2.1).
    MixedCodes,
}

impl ReplyError {
    fn describe(self) -> &'static str {
        match self {
            ReplyError::BadCode => "reply line without a valid reply code",
            ReplyError::LineTooLong => "reply line longer than 512 octets",
            ReplyError::TooManyLines => "reply with too many lines",
            ReplyError::MixedCodes => "multi-line reply with mixed reply codes",
        }
    }

    /// What the recipients of a transaction cut short by this error are told.
    pub fn reply(self) -> Reply {
        Reply::new(451, "4.5.0", format!("Protocol error: {}", self.describe()))
    }
}

/// Collects reply lines until a reply is complete.
///
/// Worst-case memory: one line buffer of 511 octets plus [`MAX_REPLY_LINES`] lines of at
/// most 510 octets each (up to three times that after replacing invalid UTF-8), about
/// 96 KiB for a hostile server; an ordinary EHLO reply takes well under 1 KiB.
#[derive(Debug, Default)]
pub struct ReplyReader {
    /// The line being read, without its LF.
    line: Vec<u8>,
    /// Code of the reply being read; meaningful while `lines` is not empty.
    code: u16,
    enhanced: Option<Enhanced>,
    lines: Vec<String>,
}

impl ReplyReader {
    pub fn new() -> ReplyReader {
        ReplyReader::default()
    }

    /// True when no part of a reply is buffered.
    pub fn is_idle(&self) -> bool {
        self.line.is_empty() && self.lines.is_empty()
    }

    /// Reads from the front of `input` until one reply is complete or `input` is used up,
    /// and moves `input` past what it read. `Ok(None)` means more bytes are needed.
    ///
    /// Lines end in CRLF; a bare LF is taken as a line end too. After an error the reader
    /// is in no useful state: the connection must end.
    pub fn read(&mut self, input: &mut &[u8]) -> Result<Option<Reply>, ReplyError> {
        while !input.is_empty() {
            // What comes before the first LF, and what after it if there is one.
            let mut pieces = input.splitn(2, |&b| b == b'\n');
            let take = pieces.next().unwrap_or_default();
            let after_newline = pieces.next();
            let buffered = self
                .line
                .len()
                .checked_add(take.len())
                .ok_or(ReplyError::LineTooLong)?;
            if buffered > MAX_LINE_BUFFER {
                return Err(ReplyError::LineTooLong);
            }
            self.line.extend_from_slice(take);
            let Some(after_newline) = after_newline else {
                *input = &[];
                return Ok(None);
            };
            *input = after_newline;
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let reply = self.finish_line(&line);
            // Reuse the allocation for the next line.
            line.clear();
            self.line = line;
            if let Some(reply) = reply? {
                return Ok(Some(reply));
            }
        }
        Ok(None)
    }

    fn finish_line(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        if line.len() > MAX_LINE_TEXT {
            return Err(ReplyError::LineTooLong);
        }
        let line = ReplyLine::parse(line)?;
        if self.lines.is_empty() {
            self.code = line.code;
        } else if line.code != self.code {
            return Err(ReplyError::MixedCodes);
        }
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(ReplyError::TooManyLines);
        }
        let mut text = line.text;
        // RFC 2034 §4: the enhanced code leads the text of every line; its class matches
        // the first digit of the reply code.
        let mut words = text.splitn(2, |&b| b == b' ');
        let first = words.next().unwrap_or_default();
        let rest = words.next().unwrap_or_default();
        if let Some(enhanced) = std::str::from_utf8(first).ok().and_then(Enhanced::parse)
            && u16::from(enhanced.class) == line.code / 100
        {
            if self.lines.is_empty() {
                self.enhanced = Some(enhanced);
            }
            text = rest;
        }
        self.lines.push(String::from_utf8_lossy(text).into_owned());
        if !line.last {
            return Ok(None);
        }
        Ok(Some(Reply {
            code: self.code,
            enhanced: self.enhanced.take(),
            lines: std::mem::take(&mut self.lines),
        }))
    }
}

/// One reply line as read: code, whether it ends the reply, and the raw text.
struct ReplyLine<'a> {
    code: u16,
    last: bool,
    text: &'a [u8],
}

impl<'a> ReplyLine<'a> {
    /// RFC 5321 §4.2: `Reply-code [ ( SP / "-" ) textstring ]`, the code being
    /// `%x32-35 %x30-35 %x30-39`.
    fn parse(line: &'a [u8]) -> Result<ReplyLine<'a>, ReplyError> {
        let [a, b, c, rest @ ..] = line else {
            return Err(ReplyError::BadCode);
        };
        if !((b'2'..=b'5').contains(a) && (b'0'..=b'5').contains(b) && c.is_ascii_digit()) {
            return Err(ReplyError::BadCode);
        }
        let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
        let (last, text) = match rest {
            [] => (true, rest),
            [b' ', text @ ..] => (true, text),
            [b'-', text @ ..] => (false, text),
            _ => return Err(ReplyError::BadCode),
        };
        Ok(ReplyLine { code, last, text })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads every reply in `input`, fed in pieces cut at `cuts`.
    fn read_all(input: &[u8], cuts: &[usize]) -> Result<Vec<Reply>, ReplyError> {
        let mut reader = ReplyReader::new();
        let mut replies = Vec::new();
        let mut start = 0;
        for end in cuts.iter().copied().chain([input.len()]) {
            let mut piece = &input[start..end];
            start = end;
            while !piece.is_empty() {
                if let Some(reply) = reader.read(&mut piece)? {
                    replies.push(reply);
                }
            }
        }
        Ok(replies)
    }

    /// Reads `input` whole, a byte at a time and split at every index; all must agree.
    fn read_every_way(input: &[u8]) -> Result<Vec<Reply>, ReplyError> {
        let whole = read_all(input, &[]);
        let bytes: Vec<usize> = (1..input.len()).collect();
        assert_eq!(read_all(input, &bytes), whole, "byte at a time");
        for i in 0..=input.len() {
            assert_eq!(read_all(input, &[i]), whole, "split at {i}");
        }
        whole
    }

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn single_line_reply() {
        let got = read_every_way(b"220 mx.example.org ESMTP ready\r\n").unwrap();
        assert_eq!(
            got,
            vec![Reply::plain(220, lines(&["mx.example.org ESMTP ready"]))]
        );
    }

    #[test]
    fn multi_line_reply_and_code_only_line() {
        let got =
            read_every_way(b"250-mx.example.org\r\n250-SIZE 1000\r\n250 PIPELINING\r\n354\r\n")
                .unwrap();
        assert_eq!(
            got,
            vec![
                Reply::plain(250, lines(&["mx.example.org", "SIZE 1000", "PIPELINING"])),
                Reply::plain(354, lines(&[""])),
            ]
        );
    }

    #[test]
    fn enhanced_codes_are_read_and_stripped() {
        let got =
            read_every_way(b"550-5.1.1 No such user\r\n550 5.1.1 here\r\n250 2.0.0\r\n").unwrap();
        assert_eq!(got[0].enhanced, Some(Enhanced::new(5, 1, 1)));
        assert_eq!(got[0].lines, lines(&["No such user", "here"]));
        assert_eq!(got[1].enhanced, Some(Enhanced::new(2, 0, 0)));
        assert_eq!(got[1].lines, lines(&[""]));
    }

    #[test]
    fn enhanced_code_of_another_class_stays_text() {
        let got = read_every_way(b"250 5.1.1 odd\r\n250 1.2.3 x\r\n").unwrap();
        assert_eq!(got[0].enhanced, None);
        assert_eq!(got[0].lines, lines(&["5.1.1 odd"]));
        assert_eq!(got[1].lines, lines(&["1.2.3 x"]));
    }

    #[test]
    fn bare_lf_ends_a_line() {
        let got = read_every_way(b"250-a\n250 b\n").unwrap();
        assert_eq!(got, vec![Reply::plain(250, lines(&["a", "b"]))]);
    }

    #[test]
    fn bad_codes_are_refused() {
        for bad in [
            &b"25 ok\r\n"[..],
            b"\r\n",
            b"abc ok\r\n",
            b"250ok\r\n",
            b"150 ok\r\n",
            b"260 ok\r\n",
            b"650 ok\r\n",
            b"25x ok\r\n",
            b" 250 ok\r\n",
        ] {
            assert_eq!(read_every_way(bad), Err(ReplyError::BadCode), "{bad:?}");
        }
    }

    #[test]
    fn mixed_codes_are_refused() {
        assert_eq!(
            read_every_way(b"250-a\r\n251 b\r\n"),
            Err(ReplyError::MixedCodes)
        );
    }

    #[test]
    fn line_length_bound_is_exact() {
        let mut ok = b"250 ".to_vec();
        ok.resize(MAX_REPLY_LINE - 2, b'x');
        ok.extend_from_slice(b"\r\n");
        assert_eq!(
            read_every_way(&ok).unwrap()[0].lines[0].len(),
            MAX_REPLY_LINE - 6
        );

        let mut long = b"250 ".to_vec();
        long.resize(MAX_REPLY_LINE - 1, b'x');
        let mut crlf = long.clone();
        crlf.extend_from_slice(b"\r\n");
        assert_eq!(read_every_way(&crlf), Err(ReplyError::LineTooLong));
        let mut lf = long.clone();
        lf.push(b'\n');
        assert_eq!(read_every_way(&lf), Err(ReplyError::LineTooLong));
        // An endless line is refused without waiting for its end.
        let endless = vec![b'2'; 100_000];
        assert_eq!(
            read_every_way(&endless[..2000]),
            Err(ReplyError::LineTooLong)
        );
        let mut reader = ReplyReader::new();
        assert_eq!(reader.read(&mut &endless[..]), Err(ReplyError::LineTooLong));
    }

    #[test]
    fn line_count_bound_is_exact() {
        let mut ok = b"250-x\r\n".repeat(MAX_REPLY_LINES - 1);
        ok.extend_from_slice(b"250 x\r\n");
        assert_eq!(read_all(&ok, &[]).unwrap()[0].lines.len(), MAX_REPLY_LINES);
        let mut long = b"250-x\r\n".repeat(MAX_REPLY_LINES);
        long.extend_from_slice(b"250 x\r\n");
        assert_eq!(read_every_way(&long), Err(ReplyError::TooManyLines));
    }

    #[test]
    fn partial_input_is_a_state() {
        let mut reader = ReplyReader::new();
        assert!(reader.is_idle());
        let mut input = &b"250-a\r\n25"[..];
        assert_eq!(reader.read(&mut input), Ok(None));
        assert!(input.is_empty());
        assert!(!reader.is_idle());
        let mut input = &b"0 b\r\n220 next"[..];
        assert_eq!(
            reader.read(&mut input),
            Ok(Some(Reply::plain(250, lines(&["a", "b"]))))
        );
        assert_eq!(input, b"220 next");
        assert!(reader.is_idle());
    }

    #[test]
    fn errors_carry_a_temporary_reply() {
        let r = ReplyError::MixedCodes.reply();
        assert_eq!(
            r.one_line(),
            "451 4.5.0 Protocol error: multi-line reply with mixed reply codes"
        );
    }
}
