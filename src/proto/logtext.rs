//! How the gateway names clients and next hops in log lines, in the shape Postfix's
//! tools read (`unknown[192.0.2.1]`, `relay=mx.example[192.0.2.25]:25`), and how text a
//! peer chose is written there ([`Escaped`], [`EscapedBytes`]).
//!
//! Plain formatting, no I/O: the cores use it for the lines they log through the `log`
//! facade; `crate::io::log` is where the lines go.

use std::net::SocketAddr;

/// A client as Postfix names it: `unknown[192.0.2.1]` until reverse DNS is known.
pub struct Peer<'a> {
    pub name: Option<&'a str>,
    pub addr: SocketAddr,
}

impl std::fmt::Display for Peer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.name.unwrap_or("unknown"), self.addr.ip())
    }
}

/// A next hop as Postfix names it in `relay=`: `127.0.0.1[127.0.0.1]:2526`.
pub struct Relay(pub SocketAddr);

impl std::fmt::Display for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]:{}", self.0.ip(), self.0.ip(), self.0.port())
    }
}

/// A next hop by the name it was reached under (the MX or relay host), as Postfix's
/// `relay=mx1.example.net[192.0.2.25]:25`. The name came from DNS or the
/// configuration: it is escaped.
pub struct NamedRelay<'a>(pub &'a str, pub SocketAddr);

impl std::fmt::Display for NamedRelay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]:{}", Escaped(self.0), self.1.ip(), self.1.port())
    }
}

/// A duration as Postfix logs delays: seconds with two decimals (`0.42`), rounded to the
/// nearest hundredth, written without floating-point formatting.
pub struct Seconds2(pub std::time::Duration);

/// A hundredth of a second in microseconds, and half of it (for rounding to the nearest).
const MICROS_PER_HUNDREDTH: u128 = 10_000;
const HALF_HUNDREDTH: u128 = MICROS_PER_HUNDREDTH / 2;

impl std::fmt::Display for Seconds2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let centis = self.0.as_micros().saturating_add(HALF_HUNDREDTH) / MICROS_PER_HUNDREDTH;
        write!(f, "{}.{:02}", centis / 100, centis % 100)
    }
}

/// Text a peer chose (a reply from a next hop, a HELO name, an address, a SASL user
/// name), fit for a log line: it cannot end the line, move the cursor, recolour a
/// terminal or pass for another field. Control characters (C0, DEL, C1), Unicode format
/// characters that reorder text (bidirectional overrides and isolates), the replacement
/// character (where octets were not UTF-8) and backslashes are written as escapes
/// (`\x1b`, `\u{202e}`, `\\`); printable text, including UTF-8 addresses, stays as it
/// is.
pub struct Escaped<'a>(pub &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_escaped(f, self.0)
    }
}

/// Octets a peer sent, which need not be UTF-8, fit for a log line as [`Escaped`]
/// makes text: what is not UTF-8 is written octet by octet as `\xNN`.
pub struct EscapedBytes<'a>(pub &'a [u8]);

impl std::fmt::Display for EscapedBytes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for chunk in self.0.utf8_chunks() {
            write_escaped(f, chunk.valid())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

fn write_escaped(f: &mut std::fmt::Formatter<'_>, text: &str) -> std::fmt::Result {
    let mut rest = text;
    while let Some(at) = rest.find(needs_escape) {
        f.write_str(&rest[..at])?;
        // `find` stopped at a char boundary: the char is there.
        let Some(c) = rest[at..].chars().next() else {
            break;
        };
        match c {
            '\\' => f.write_str("\\\\")?,
            c if (c as u32) < 0x100 => write!(f, "\\x{:02x}", c as u32)?,
            c => write!(f, "\\u{{{:04x}}}", c as u32)?,
        }
        rest = &rest[at + c.len_utf8()..];
    }
    f.write_str(rest)
}

/// Characters that change how the text around them reads without being seen:
/// bidirectional embeddings, overrides and isolates, and the marks, which reorder what
/// a reader sees (CVE-2021-42574); the line and paragraph separators and the byte
/// order mark. Logs escape them and the console shows `?` for them.
pub fn reorders(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || reorders(c)
        // What stands in for octets that were not UTF-8: shown as an escape, so the log
        // says text was replaced there.
        || c == '\u{fffd}'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_have_two_decimals_rounded_to_the_nearest() {
        let text = |micros: u64| Seconds2(std::time::Duration::from_micros(micros)).to_string();
        assert_eq!(text(0), "0.00");
        assert_eq!(text(4_999), "0.00");
        assert_eq!(text(5_000), "0.01");
        assert_eq!(text(424_000), "0.42");
        assert_eq!(text(995_000), "1.00");
        assert_eq!(text(12_345_678), "12.35");
        assert_eq!(text(3_600_000_000), "3600.00");
    }

    #[test]
    fn peer_text_is_escaped_for_logs() {
        let e = |s: &str| Escaped(s).to_string();
        assert_eq!(e("plain text <a@b>"), "plain text <a@b>");
        assert_eq!(e("a\r\nb"), "a\\x0d\\x0ab");
        assert_eq!(e("\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(e("nul\0here"), "nul\\x00here");
        assert_eq!(e("back\\slash"), "back\\\\slash");
        assert_eq!(e("del\x7f c1\u{9b}"), "del\\x7f c1\\x9b");
        assert_eq!(
            e("j\u{f6}rg@b\u{fc}cher.example"),
            "j\u{f6}rg@b\u{fc}cher.example"
        );
        assert_eq!(e("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(e("line\u{2028}sep"), "line\\u{2028}sep");
        let b = |s: &[u8]| EscapedBytes(s).to_string();
        assert_eq!(
            b(b"ok \xff\xfe \xc3\xa9 \x1b"),
            "ok \\xff\\xfe \u{e9} \\x1b"
        );
        // Nothing printed can end the line or start an escape sequence.
        for c in (0u32..0x110000).filter_map(char::from_u32) {
            let out = e(&c.to_string());
            assert!(
                !out.chars().any(needs_escape) || out.starts_with('\\'),
                "{c:?}"
            );
            assert!(!out.contains(['\r', '\n', '\x1b', '\0']), "{c:?}");
        }
    }
}
