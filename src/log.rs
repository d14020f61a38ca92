//! Logging: one line per event, in the shape Postfix administrators and their tools know.
//!
//! `Nov 21 21:41:41 gw.example.com drawbridge/smtpd[4242]: 18E0F3A2C41B07: from=<a@b>, …`
//! The log target names the component (`smtpd`, `smtp`, `qmgr`, `spool`, `main`).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::OnceLock;

static HOST: OnceLock<String> = OnceLock::new();

/// Starts logging to standard error. `RUST_LOG` overrides the default level (info).
pub fn init(host_name: &str) {
    let _ = HOST.set(host_name.to_string());
    let pid = std::process::id();
    let mut builder = env_logger::Builder::new();
    builder.filter_level(log::LevelFilter::Info);
    // cryptoki logs each mechanism it has no name for as an error, dozens of lines at every
    // start with a real module; the token reports what matters itself.
    builder.filter_module("cryptoki", log::LevelFilter::Off);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.format(move |out, record| {
        let host = HOST.get().map_or("-", String::as_str);
        let target = record.target();
        let component = target.rsplit("::").next().unwrap_or(target);
        let level = match record.level() {
            log::Level::Error => "error: ",
            log::Level::Warn => "warning: ",
            _ => "",
        };
        writeln!(
            out,
            "{} {host} drawbridge/{component}[{pid}]: {level}{}",
            crate::clock::syslog_stamp(crate::clock::unix_now()),
            record.args()
        )
    });
    // A second init (tests) keeps the first logger.
    let _ = builder.try_init();
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
