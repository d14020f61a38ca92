//! `test smtp HOST[:PORT]` and `test dns NAME [mx]`: what the gateway sees of a next hop
//! or a name, from the gateway itself, each step timed.
//!
//! `test smtp` speaks the dialogue itself (greeting, EHLO, STARTTLS, EHLO, QUIT) with
//! the same reply reader as delivery, runs the TLS handshake as delivery does (without
//! requiring trust), then judges the certificate the way a `musttlsclient` delivery
//! would: chained to the public roots or the configured CAs, and naming the host.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use smol::future::FutureExt as _;

use crate::gateway::Gateway;
use crate::io::resolver::MxAnswer;
use crate::io::tls::Transport;
use crate::proto::dns::Name;
use crate::proto::smtp::client_reply::ReplyReader;
use crate::proto::smtp::reply::Reply;

/// How long `test smtp` waits for the connection and for each reply.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn ms(since: Instant) -> String {
    format!("{:.1} ms", since.elapsed().as_secs_f64() * 1000.0)
}

async fn within<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    f.or(async {
        Timer::after(STEP_TIMEOUT).await;
        Err(format!(
            "{what}: no answer within {}s",
            STEP_TIMEOUT.as_secs()
        ))
    })
    .await
}

/// One SMTP dialogue over a transport.
struct Dialogue {
    transport: Transport,
    reader: ReplyReader,
    buf: Vec<u8>,
}

impl Dialogue {
    async fn reply(&mut self, what: &str) -> Result<Reply, String> {
        within(what, async {
            let mut chunk = [0u8; 4096];
            loop {
                let mut input: &[u8] = &self.buf;
                let got = self
                    .reader
                    .read(&mut input)
                    .map_err(|e| format!("{what}: {}", e.reply()))?;
                let rest = input.to_vec();
                self.buf = rest;
                if let Some(reply) = got {
                    return Ok(reply);
                }
                match self.transport.read(&mut chunk).await {
                    Ok(0) => return Err(format!("{what}: the server closed the connection")),
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    Err(e) => return Err(format!("{what}: {e}")),
                }
            }
        })
        .await
    }

    async fn command(&mut self, line: &str) -> Result<Reply, String> {
        let what = line.split_whitespace().next().unwrap_or(line).to_string();
        self.transport
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        self.reply(&what).await
    }
}

/// `test smtp`: the report, or the step that failed (after the steps before it).
pub async fn smtp(gw: &Rc<Gateway>, host: &str, port: u16) -> Result<String, String> {
    let mut out = String::new();
    match smtp_steps(gw, host, port, &mut out).await {
        Ok(()) => Ok(out),
        Err(e) => {
            out.push_str(&e);
            Err(out)
        }
    }
}

async fn smtp_steps(
    gw: &Rc<Gateway>,
    host: &str,
    port: u16,
    out: &mut String,
) -> Result<(), String> {
    let running = gw.running();
    let start = Instant::now();
    let ip: IpAddr = match host.parse() {
        Ok(ip) => ip,
        Err(_) => {
            let name =
                Name::parse(host).map_err(|e| format!("'{host}' is not a host name: {e:?}"))?;
            let resolver = running
                .resolver
                .clone()
                .ok_or("no DNS resolvers are configured")?;
            let t = Instant::now();
            let addresses = resolver
                .lookup_ip(&name)
                .await
                .map_err(|e| format!("resolve {host}: {e}"))?;
            let first = *addresses
                .first()
                .ok_or_else(|| format!("resolve {host}: no addresses"))?;
            let _ = writeln!(
                out,
                "resolve   {host}: {} ({})",
                addresses
                    .iter()
                    .map(IpAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                ms(t)
            );
            first
        }
    };
    let peer = SocketAddr::new(ip, port);
    let t = Instant::now();
    let stream = within("connect", async {
        Async::<TcpStream>::connect(peer)
            .await
            .map_err(|e| format!("connect {peer}: {e}"))
    })
    .await?;
    let _ = writeln!(out, "connect   {peer} ({})", ms(t));
    let mut d = Dialogue {
        transport: Transport::Plain(stream),
        reader: ReplyReader::new(),
        buf: Vec::new(),
    };
    let t = Instant::now();
    let greeting = d.reply("greeting").await?;
    let _ = writeln!(out, "greeting  {} ({})", greeting.one_line(), ms(t));
    if !greeting.is_positive() {
        return Err("the server does not take mail now\n".into());
    }
    let helo = &running.config.system.host_name;
    let t = Instant::now();
    let ehlo = d.command(&format!("EHLO {helo}")).await?;
    let _ = writeln!(out, "EHLO      {} ({})", ehlo.code, ms(t));
    let keywords: Vec<&str> = ehlo
        .lines
        .iter()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let _ = writeln!(
        out,
        "          offers {}",
        if keywords.is_empty() {
            "nothing".into()
        } else {
            keywords.join(" ")
        }
    );
    let starttls = keywords.iter().any(|k| k.eq_ignore_ascii_case("STARTTLS"));
    match (starttls, running.tls.clone()) {
        (false, _) => {
            let _ = writeln!(
                out,
                "STARTTLS  not offered: mail to this host would go in clear (and musttlsclient would not send it)"
            );
        }
        (true, None) => {
            let _ = writeln!(
                out,
                "STARTTLS  offered, but TLS is not available on this gateway"
            );
        }
        (true, Some(tls)) => {
            let t = Instant::now();
            let reply = d.command("STARTTLS").await?;
            if reply.code != 220 {
                let _ = writeln!(out, "STARTTLS  refused: {} ({})", reply.one_line(), ms(t));
            } else {
                // Anything sent after the 220 is not to be trusted (response injection).
                d.buf.clear();
                d.reader = ReplyReader::new();
                let plain = d.transport;
                let shaken = tls
                    .connect(plain, host, false)
                    .await
                    .map_err(|e| format!("STARTTLS  handshake failed: {e}\n"))?;
                let info = shaken.tls_info().unwrap_or_default();
                let verdict = match tls.verify_peer(&shaken, host) {
                    Ok(()) => format!("verified for {host}"),
                    Err(e) => format!("NOT trusted: {e}"),
                };
                d.transport = shaken;
                let _ = writeln!(
                    out,
                    "STARTTLS  {} with cipher {} ({})",
                    info.version,
                    info.cipher_suite,
                    ms(t)
                );
                let _ = writeln!(out, "          certificate {verdict}");
                let t = Instant::now();
                let again = d.command(&format!("EHLO {helo}")).await?;
                let _ = writeln!(out, "EHLO      {} under TLS ({})", again.code, ms(t));
            }
        }
    }
    let t = Instant::now();
    let quit = d.command("QUIT").await?;
    let _ = writeln!(out, "QUIT      {} ({})", quit.one_line(), ms(t));
    let _ = d.transport.close().await;
    let _ = writeln!(out, "total     {}", ms(start));
    Ok(())
}

/// `test dns NAME [mx]`.
pub async fn dns(gw: &Rc<Gateway>, name: &str, mx: bool) -> Result<String, String> {
    let parsed = Name::parse(name).map_err(|e| format!("'{name}' is not a domain name: {e:?}"))?;
    let resolver = gw
        .running()
        .resolver
        .clone()
        .ok_or("no DNS resolvers are configured")?;
    let t = Instant::now();
    let mut out = String::new();
    if mx {
        match resolver
            .lookup_mx(&parsed)
            .await
            .map_err(|e| format!("{name} MX: {e}"))?
        {
            MxAnswer::NoMx => {
                let _ = writeln!(out, "{name} has no MX records: mail goes to its addresses");
            }
            MxAnswer::NullMx => {
                let _ = writeln!(out, "{name} has a null MX (RFC 7505): it takes no mail");
            }
            MxAnswer::Exchanges(list) => {
                for m in list {
                    let _ = writeln!(out, "{name} MX {} {}", m.preference, m.exchange);
                }
            }
        }
    } else {
        let addresses = resolver
            .lookup_ip(&parsed)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        if addresses.is_empty() {
            let _ = writeln!(out, "{name} exists but has no addresses");
        }
        for a in addresses {
            let kind = if a.is_ipv4() { "A" } else { "AAAA" };
            let _ = writeln!(out, "{name} {kind} {a}");
        }
    }
    let _ = writeln!(out, "({})", ms(t));
    Ok(out)
}
