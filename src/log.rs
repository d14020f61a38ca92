//! Logging: one line per event, in the shape Postfix administrators and their tools know.
//!
//! `Nov 21 21:41:41 gw.example.com drawbridge/smtpd[4242]: 18E0F3A2C41B07: from=<a@b>, …`
//! The log target names the component (`smtpd`, `smtp`, `qmgr`, `spool`, `main`).
//!
//! Every line goes to standard error (unless a console owns that terminal), into a
//! bounded ring of the latest lines (`show log`), to each console session listening
//! (printed above the line being typed), and, when `set system syslog host` names
//! receivers, to each as an RFC 5424 message over UDP (RFC 5426) whose MSG is the
//! Postfix-shaped text.

use std::collections::VecDeque;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{LazyLock, Mutex};

/// Log lines kept for `show log`: the latest 1000, each cut at
/// [`MAX_LINE_OCTETS`]: at most about 1 MiB.
pub const RING_LINES: usize = 1000;
/// Longest line kept in the ring, sent to a console or to syslog. RFC 5424 §6.1: a
/// receiver must take 480 octets and should take 2048; we send at most this much.
pub const MAX_LINE_OCTETS: usize = 2048;
/// Lines waiting for one console session that is slow to print them (a 9600 baud line
/// under a burst); further lines are not shown on it (they stay in the ring).
pub const CONSOLE_BACKLOG: usize = 256;
/// RFC 5424 §6.2.1: facility 2 is the mail system.
const FACILITY_MAIL: u8 = 2;

struct Hub {
    host: String,
    pid: u32,
    ring: VecDeque<String>,
    consoles: Vec<smol::channel::Sender<String>>,
    /// Write to standard error.
    stderr: bool,
    syslog: Option<Syslog>,
}

/// The receivers of remote syslog, and a socket for each address family they use.
struct Syslog {
    targets: Vec<SocketAddr>,
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
}

static HUB: LazyLock<Mutex<Hub>> = LazyLock::new(|| {
    Mutex::new(Hub {
        host: "-".into(),
        pid: std::process::id(),
        ring: VecDeque::new(),
        consoles: Vec::new(),
        stderr: true,
        syslog: None,
    })
});

fn hub() -> std::sync::MutexGuard<'static, Hub> {
    // A panic while logging leaves a usable hub: lines, not invariants.
    HUB.lock().unwrap_or_else(|e| e.into_inner())
}

struct Logger {
    filter: env_logger::Logger,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        let target = record.target();
        let component = target.rsplit("::").next().unwrap_or(target);
        let level = match record.level() {
            log::Level::Error => "error: ",
            log::Level::Warn => "warning: ",
            _ => "",
        };
        let message = cut(format!("{level}{}", record.args()));
        let micros = crate::clock::unix_micros_now();
        let mut hub = hub();
        let mut line = format!(
            "{} {} drawbridge/{component}[{}]: {message}",
            crate::clock::syslog_stamp(micros / 1_000_000),
            hub.host,
            hub.pid
        );
        if hub.stderr {
            // One write per line: stderr is unbuffered, and `writeln!` would make two.
            line.push('\n');
            let _ = std::io::stderr().write_all(line.as_bytes());
            line.pop();
        }
        if let Some(syslog) = &hub.syslog {
            let frame = syslog_frame(
                record.level(),
                micros,
                &hub.host,
                component,
                hub.pid,
                &message,
            );
            for target in &syslog.targets {
                let socket = if target.is_ipv4() {
                    &syslog.v4
                } else {
                    &syslog.v6
                };
                // UDP: a receiver that is down or a full buffer loses the line, as with
                // any syslog over UDP; the other outputs still have it.
                if let Some(socket) = socket {
                    let _ = socket.send_to(frame.as_bytes(), target);
                }
            }
        }
        hub.consoles.retain(|c| !c.is_closed());
        for console in &hub.consoles {
            let _ = console.try_send(line.clone());
        }
        if hub.ring.len() >= RING_LINES {
            hub.ring.pop_front();
        }
        hub.ring.push_back(line);
    }

    fn flush(&self) {}
}

/// `text` cut to at most [`MAX_LINE_OCTETS`], at a character boundary.
fn cut(mut text: String) -> String {
    if text.len() > MAX_LINE_OCTETS {
        let mut end = MAX_LINE_OCTETS;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`, with
/// the mail facility, no message id or structured data, and the Postfix-shaped text as
/// MSG (plain UTF-8 without a BOM: RFC 5424 §6.4's MSG-ANY).
pub fn syslog_frame(
    level: log::Level,
    micros: u64,
    host: &str,
    component: &str,
    pid: u32,
    message: &str,
) -> String {
    let severity = match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    };
    let pri = FACILITY_MAIL * 8 + severity;
    // HOSTNAME and APP-NAME are printable US-ASCII without spaces (§6.2.4, §6.2.5).
    let field = |s: &str, max: usize| -> String {
        let f: String = s
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(max)
            .collect();
        if f.is_empty() { "-".into() } else { f }
    };
    format!(
        "<{pri}>1 {} {} {} {pid} - - {message}",
        crate::clock::rfc3339_micros(micros),
        field(host, 255),
        field(&format!("drawbridge/{component}"), 48),
    )
}

/// Starts logging. `RUST_LOG` overrides the default level (info).
pub fn init(host_name: &str) {
    hub().host = host_name.to_string();
    let mut builder = env_logger::Builder::new();
    builder.filter_level(log::LevelFilter::Info);
    // cryptoki logs each mechanism it has no name for as an error, dozens of lines at every
    // start with a real module; the token reports what matters itself.
    builder.filter_module("cryptoki", log::LevelFilter::Off);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    let filter = builder.build();
    let max = filter.filter();
    // A second init (tests) keeps the first logger.
    if log::set_boxed_logger(Box::new(Logger { filter })).is_ok() {
        log::set_max_level(max);
    }
}

/// A committed configuration's host name and syslog receivers take effect.
pub fn configure(system: &crate::config::System) {
    let mut hub = hub();
    hub.host = system.host_name.clone();
    let targets = system.syslog_hosts.clone();
    if targets.is_empty() {
        hub.syslog = None;
        return;
    }
    if hub.syslog.as_ref().is_some_and(|s| s.targets == targets) {
        return;
    }
    let open = |bind: &str, wanted: bool| -> std::io::Result<Option<UdpSocket>> {
        if !wanted {
            return Ok(None);
        }
        let socket = UdpSocket::bind(bind)?;
        socket.set_nonblocking(true)?;
        Ok(Some(socket))
    };
    let sockets = open("0.0.0.0:0", targets.iter().any(SocketAddr::is_ipv4))
        .and_then(|v4| Ok((v4, open("[::]:0", targets.iter().any(SocketAddr::is_ipv6))?)));
    match sockets {
        Ok((v4, v6)) => hub.syslog = Some(Syslog { targets, v4, v6 }),
        Err(e) => {
            hub.syslog = None;
            drop(hub);
            log::error!(target: "main", "remote syslog: cannot open a UDP socket: {e}");
        }
    }
}

/// Whether lines are written to standard error: a console on the same terminal prints
/// them itself, above the line being typed.
pub fn set_stderr(on: bool) {
    hub().stderr = on;
}

/// A console session's feed of log lines from now on; at most [`CONSOLE_BACKLOG`] wait.
pub fn subscribe() -> smol::channel::Receiver<String> {
    let (tx, rx) = smol::channel::bounded(CONSOLE_BACKLOG);
    hub().consoles.push(tx);
    rx
}

/// The latest lines, oldest first.
pub fn recent() -> Vec<String> {
    hub().ring.iter().cloned().collect()
}

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

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        // Bidirectional embeddings, overrides and isolates, and the marks: they reorder
        // what a reader sees (CVE-2021-42574).
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
        // What stands in for octets that were not UTF-8: shown as an escape, so the log
        // says text was replaced there.
        || c == '\u{fffd}'
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn rfc5424_frames() {
        let frame = syslog_frame(
            log::Level::Info,
            1_795_297_301_000_123,
            "gw.example.com",
            "smtpd",
            4242,
            "18E0F3A2C41B07: client=unknown[192.0.2.1]",
        );
        assert_eq!(
            frame,
            "<22>1 2026-11-21T21:41:41.000123Z gw.example.com drawbridge/smtpd 4242 - - 18E0F3A2C41B07: client=unknown[192.0.2.1]"
        );
        let frame = syslog_frame(log::Level::Error, 0, "", "qmgr", 1, "x");
        assert!(frame.starts_with("<19>1 1970-01-01T00:00:00.000000Z - drawbridge/qmgr 1 - - x"));
        assert_eq!(cut("é".repeat(MAX_LINE_OCTETS)).len(), MAX_LINE_OCTETS);
    }
}
