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
use std::fmt::Write as _;
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
/// Room a line is formatted into at first: most lines fit without growing it.
const LINE_ROOM: usize = 256;

struct Hub {
    host: String,
    pid: u32,
    ring: VecDeque<String>,
    consoles: Vec<smol::channel::Sender<String>>,
    /// Write to standard error.
    stderr: bool,
    syslog: Option<Syslog>,
    /// The second of the last line and its time stamp, which most lines share.
    stamp: (u64, String),
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
        stamp: (u64::MAX, String::new()),
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
        // Formatted before the hub is locked (a value's `Display` may log), into room
        // for a usual line, so it is not grown step by step.
        let mut message = String::with_capacity(LINE_ROOM);
        message.push_str(level);
        let _ = write!(message, "{}", record.args());
        let message = cut(message);
        let micros = crate::io::clock::unix_micros_now();
        let mut hub = hub();
        let secs = micros / 1_000_000;
        if hub.stamp.0 != secs {
            hub.stamp = (secs, crate::proto::calendar::syslog_stamp(secs));
        }
        let mut line = String::with_capacity(LINE_ROOM + message.len());
        let _ = write!(
            line,
            "{} {} drawbridge/{component}[{}]: {message}",
            hub.stamp.1, hub.host, hub.pid
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
        crate::proto::calendar::rfc3339_micros(micros),
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
pub fn configure(system: &crate::proto::config::System) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
