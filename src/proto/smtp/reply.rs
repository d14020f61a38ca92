//! SMTP replies: a code, an optional RFC 3463 enhanced status code and text lines.
//!
//! Used by the server core to write replies and by the client core to read them.

use std::fmt;

/// RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets with its CRLF.
pub const MAX_REPLY_LINE: usize = 512;
/// Most lines we keep from a peer's multi-line reply (EHLO lists are the longest).
pub const MAX_REPLY_LINES: usize = 64;
/// Room first made for a reply on the wire, not a limit: a one-line reply with its
/// enhanced code and a short text fits (`250 2.1.5 Ok\r\n` is 14 octets); a longer one,
/// such as the EHLO list, grows the vector.
const TYPICAL_WIRE_LEN: usize = 64;

/// An RFC 3463 enhanced status code `class.subject.detail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Enhanced {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl Enhanced {
    pub const fn new(class: u8, subject: u16, detail: u16) -> Enhanced {
        Enhanced {
            class,
            subject,
            detail,
        }
    }

    /// Parses `2.1.0`; class must be 2, 4 or 5; subject and detail at most 3 digits.
    pub fn parse(s: &str) -> Option<Enhanced> {
        let mut it = s.split('.');
        let class = it.next()?;
        let subject = it.next()?;
        let detail = it.next()?;
        if it.next().is_some() {
            return None;
        }
        let digits = |t: &str, max: usize| {
            !t.is_empty() && t.len() <= max && t.bytes().all(|b| b.is_ascii_digit())
        };
        if !(digits(class, 1) && digits(subject, 3) && digits(detail, 3)) {
            return None;
        }
        let class: u8 = class.parse().ok()?;
        if !matches!(class, 2 | 4 | 5) {
            return None;
        }
        Some(Enhanced {
            class,
            subject: subject.parse().ok()?,
            detail: detail.parse().ok()?,
        })
    }
}

impl Enhanced {
    /// The code as text, `2.1.5`, built in `buf` without allocating: the one writer of
    /// this form, for `Display`, the wire and the one-line form alike.
    pub fn text(self, buf: &mut [u8; ENHANCED_TEXT_MAX]) -> &str {
        let mut at = buf.len();
        at = digits_before(buf, at, self.detail.into());
        at = dot_before(buf, at);
        at = digits_before(buf, at, self.subject.into());
        at = dot_before(buf, at);
        at = digits_before(buf, at, self.class.into());
        // ASCII digits and dots are UTF-8.
        std::str::from_utf8(buf.get(at..).unwrap_or_default()).unwrap_or_default()
    }
}

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text(&mut [0; ENHANCED_TEXT_MAX]))
    }
}

/// One SMTP reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<Enhanced>,
    /// Text lines without code, enhanced code or CRLF. Never empty.
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced code, e.g. `Reply::new(250, "2.0.0", "Ok")`.
    ///
    /// `enhanced` must be a valid code; it is a literal at every call site.
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Reply {
        let enhanced = Enhanced::parse(enhanced);
        debug_assert!(enhanced.is_some(), "bad enhanced code literal");
        Reply {
            code,
            enhanced,
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced code (greetings and EHLO/HELO, RFC 2034 §3).
    pub fn plain(code: u16, lines: Vec<String>) -> Reply {
        let lines = if lines.is_empty() {
            vec![String::new()]
        } else {
            lines
        };
        Reply {
            code,
            enhanced: None,
            lines,
        }
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        (500..).contains(&self.code)
    }

    /// The reply on the wire, every line ending in CRLF.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TYPICAL_WIRE_LEN);
        self.write_wire(&mut out);
        out
    }

    /// Appends the reply to `out`. Text is cut so that no line passes 512 octets.
    pub fn write_wire(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        let mut digits = [0; DECIMAL_DIGITS];
        let code = decimal(self.code.into(), &mut digits);
        let mut buf = [0; ENHANCED_TEXT_MAX];
        let enhanced = self.enhanced.map(|e| e.text(&mut buf));
        for (i, line) in self.lines.iter().enumerate() {
            let start = out.len();
            out.extend_from_slice(code.as_bytes());
            out.push(if i == last { b' ' } else { b'-' });
            if let Some(enhanced) = enhanced {
                out.extend_from_slice(enhanced.as_bytes());
                if !line.is_empty() {
                    out.push(b' ');
                }
            }
            let room = MAX_REPLY_LINE - 2 - (out.len() - start);
            let text = line.as_bytes();
            let text = &text[..text.len().min(room)];
            if text.iter().any(|&b| b == b'\r' || b == b'\n') {
                out.extend(
                    text.iter()
                        .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
                );
            } else {
                out.extend_from_slice(text);
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The whole text on one line, as logs show it: `550 5.7.1 Relaying denied`.
    pub fn one_line(&self) -> String {
        let text: usize = self.lines.iter().map(|l| l.len() + 1).sum();
        let mut s = String::with_capacity(CODES_ROOM + text);
        let mut digits = [0; DECIMAL_DIGITS];
        s.push_str(decimal(self.code.into(), &mut digits));
        if let Some(e) = self.enhanced {
            s.push(' ');
            s.push_str(e.text(&mut [0; ENHANCED_TEXT_MAX]));
        }
        for line in &self.lines {
            s.push(' ');
            s.push_str(line);
        }
        s
    }
}

/// `n` in decimal, as `Display` writes it, without formatting machinery: every reply
/// line and every delivery log line has one or four of these.
fn decimal(n: u32, digits: &mut [u8; DECIMAL_DIGITS]) -> &str {
    let at = digits_before(digits, DECIMAL_DIGITS, n);
    // ASCII digits are UTF-8.
    std::str::from_utf8(digits.get(at..).unwrap_or_default()).unwrap_or_default()
}

/// Writes `n` in decimal to end just before `end` in `buf`; where it starts. Digits that
/// would not fit are left out (the buffers are sized for the largest value).
fn digits_before(buf: &mut [u8], end: usize, n: u32) -> usize {
    let mut at = end;
    let mut rest = n;
    while let Some(slot) = at.checked_sub(1).and_then(|i| buf.get_mut(i)) {
        // A digit: `rest % 10` is below 10.
        *slot = b'0' + (rest % 10) as u8;
        at -= 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    at
}

/// Writes a dot just before `end` in `buf`; where it starts.
fn dot_before(buf: &mut [u8], end: usize) -> usize {
    match end.checked_sub(1).and_then(|i| buf.get_mut(i)) {
        Some(slot) => {
            *slot = b'.';
            end - 1
        }
        None => end,
    }
}

/// Room for a code and an enhanced code with their separators (`250 2.1.5 `, at most
/// `599 255.65535.65535 `).
const CODES_ROOM: usize = 24;
/// The digits of the largest `u32`.
const DECIMAL_DIGITS: usize = 10;
/// The longest enhanced code as text: `255.65535.65535`.
pub const ENHANCED_TEXT_MAX: usize = 15;

/// The RFC 4954 reply to a failed SASL exchange: the SASL core names the failure, the
/// SMTP core words it (so SASL knows nothing of SMTP replies).
impl From<&crate::proto::sasl::AuthError> for Reply {
    fn from(e: &crate::proto::sasl::AuthError) -> Reply {
        let (code, enhanced, text) = e.parts();
        Reply::new(code, enhanced, text)
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.one_line())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_as_display_writes_them() {
        for n in [0, 1, 9, 10, 99, 100, 250, 554, 65_535, u32::MAX] {
            assert_eq!(decimal(n, &mut [0; DECIMAL_DIGITS]), n.to_string());
        }
        for e in [
            Enhanced::new(2, 0, 0),
            Enhanced::new(5, 7, 1),
            Enhanced::new(4, 12, 300),
            Enhanced::new(u8::MAX, u16::MAX, u16::MAX),
        ] {
            let expected = format!("{}.{}.{}", e.class, e.subject, e.detail);
            assert_eq!(e.text(&mut [0; ENHANCED_TEXT_MAX]), expected);
            assert_eq!(e.to_string(), expected);
        }
    }

    #[test]
    fn enhanced_codes_parse_strictly() {
        assert_eq!(Enhanced::parse("2.1.0"), Some(Enhanced::new(2, 1, 0)));
        assert_eq!(Enhanced::parse("5.7.123"), Some(Enhanced::new(5, 7, 123)));
        for bad in [
            "", "2.1", "3.0.0", "2.1.0.1", "2.1234.0", "2.a.0", "22.1.0", "2..0",
        ] {
            assert_eq!(Enhanced::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn multi_line_wire_form() {
        let r = Reply {
            code: 250,
            enhanced: None,
            lines: vec!["a".into(), "b".into()],
        };
        assert_eq!(r.to_wire(), b"250-a\r\n250 b\r\n");
        let r = Reply::new(550, "5.7.1", "Relaying denied");
        assert_eq!(r.to_wire(), b"550 5.7.1 Relaying denied\r\n");
        assert_eq!(r.one_line(), "550 5.7.1 Relaying denied");
        let r = Reply {
            code: 451,
            enhanced: Some(Enhanced::new(4, 12, 300)),
            lines: vec!["a".into(), String::new(), "b\rc".into()],
        };
        assert_eq!(
            r.to_wire(),
            b"451-4.12.300 a\r\n451-4.12.300\r\n451 4.12.300 b c\r\n"
        );
        assert_eq!(r.one_line(), "451 4.12.300 a  b\rc");
        assert_eq!(r.one_line(), r.to_string());
    }

    #[test]
    fn wire_lines_are_bounded_and_single() {
        let r = Reply::new(250, "2.0.0", "x".repeat(2000) + "\r\nINJECT");
        let w = r.to_wire();
        assert_eq!(w.len(), MAX_REPLY_LINE);
        assert_eq!(w.iter().filter(|&&b| b == b'\n').count(), 1);
    }
}
